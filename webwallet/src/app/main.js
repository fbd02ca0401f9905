// The web wallet's entry point: open storage, register the service worker (the app then
// starts offline), and show the code screen when this phone is enrolled, the enrollment
// screen otherwise (also after the browser lost the wallet's storage).
import { CodeScreen } from './code_screen.js';
import { payloadFromHash } from './deep_link.js';
import { $, describe, showScreen } from './dom.js';
import { EnrollScreen } from './enroll_screen.js';
import { t, translatePage } from './i18n.js';
import { ScanScreen } from './scan_screen.js';
import { Wallet } from './wallet.js';
import { WalletScreen } from './wallet_screen.js';

async function start() {
  translatePage(document);
  registerServiceWorker();
  const wallet = await Wallet.open();
  const screens = {};
  let current = null;
  const go = async (name) => {
    if (current && current !== name && screens[current].leave) screens[current].leave();
    current = name;
    showScreen(name);
    await screens[name].enter();
  };
  const home = () => go(wallet.enrolled() ? 'code' : 'enroll');
  screens.enroll = new EnrollScreen(wallet, { onEnrolled: home });
  screens.code = new CodeScreen(wallet, { onStorageLost: async () => { await wallet.reload(); await go('enroll'); } });
  screens.wallet = new WalletScreen(wallet, { onChanged: async () => { await wallet.reload(); if (!wallet.enrolled()) await go('enroll'); } });
  screens.scan = new ScanScreen(wallet, {
    onBind: async (merchant) => { await screens.code.bindTo(merchant); await go('code'); },
  });
  $('nav-code').addEventListener('click', () => go('code'));
  $('nav-wallet').addEventListener('click', () => go('wallet'));
  $('nav-scan').addEventListener('click', () => go('scan'));
  const drawNetwork = () => { $('net').textContent = navigator.onLine ? t('online') : t('offline'); };
  window.addEventListener('online', drawNetwork);
  window.addEventListener('offline', drawNetwork);
  drawNetwork();
  document.body.dataset.ready = 'true';
  await home();
  // A shop's checkout page links to /wallet/#pay=<payload>: open it as a scan would. The hash
  // is dropped at once so a reload or a shared screenshot of the address does not reopen it.
  const openLinked = async () => {
    const payload = payloadFromHash(window.location.hash);
    if (payload === null) return;
    history.replaceState(null, '', window.location.pathname + window.location.search);
    if (!wallet.enrolled()) return;
    await go('scan');
    await screens.scan.read(payload);
  };
  window.addEventListener('hashchange', () => { openLinked().catch(() => { /* the scan screen shows its own errors */ }); });
  await openLinked();
}

function registerServiceWorker() {
  if (!('serviceWorker' in navigator)) return;
  navigator.serviceWorker.register('sw.js', { scope: './' }).catch(() => { /* the app still works online */ });
}

start().catch((error) => {
  document.body.textContent = describe(error);
});
