// The code a cashier scans: full width, black on white, a countdown, a new code at every time
// step (and on a tap), never in the page's URL, history or any cache. Offline.
// An offline (v4) code spends the allowance (docs/offline.md §3.5): it is made only on request
// and on a tap, never on a timer, since each one uses a counter and reserves its amount.
// A code issued by the server (docs/spec.md §14) is asked for online, on a tap or when this
// phone cannot make a code itself, and is shown with a note saying so; it is never replaced by
// itself when its step ends (each one is a request), only taken off the screen when it expires.
import { STEP_SECONDS, bindingDigest, formatAmount, parseAmount, stepOf } from '../core/index.js';
import { $, describe, element, money, setMessage } from './dom.js';
import { t } from './i18n.js';
import { CODE_VALID_STEPS } from './offline.js';
import { clearCanvas, drawCode128, drawQr, groupDigits } from './render.js';

const TICK_MS = 250;
const VERSION_LABELS = { v3: 'v_qr', v2: 'v_qr2', v1: 'v_bar', v4: 'v_offline' };
const OFFLINE_ERRORS = { offline_exhausted: 'offline_exhausted', offline_limit: 'offline_limit', certificate_expired: 'offline_expired', offline_none: 'offline_none' };

export class CodeScreen {
  constructor(wallet, { onStorageLost }) {
    this.wallet = wallet;
    this.onStorageLost = onStorageLost;
    this.shown = null;
    this.binding = null;
    this.busy = null;
    this.timer = null;
    this.version = null;
    this.offline = null; // {amountMinor} while showing offline codes
    this.server = null; // {fallback: why this phone could not, or null} while showing server codes
    $('code-box').addEventListener('click', () => this.refresh());
    $('code-server').addEventListener('click', () => this.startServer());
    for (const event of ['online', 'offline']) window.addEventListener(event, () => this.drawServerButton());
    $('code-offline').addEventListener('click', () => this.startOffline());
    $('code-online').addEventListener('click', () => this.stopOffline());
    $('code-unbind').addEventListener('click', () => { this.binding = null; this.refresh(); });
    document.addEventListener('visibilitychange', () => {
      if (!this.active) return;
      // The app switcher keeps a picture of the page: no live code in it.
      if (document.hidden) {
        this.blank();
        this.wakeLock = null; // the browser released it
      } else {
        this.keepScreenOn();
        if (this.offline) setMessage('code-error', t('offline_tap'));
        else this.refresh();
      }
    });
  }

  get active() { return !$('screen-code').hidden; }

  enter() {
    this.keepScreenOn();
    this.drawServerButton();
    this.drawVersionTabs();
    this.drawOfflineControls();
    clearInterval(this.timer);
    this.timer = setInterval(() => this.tick(), TICK_MS);
    return this.refresh();
  }

  leave() {
    if (this.wakeLock) this.wakeLock.release().catch(() => {});
    this.wakeLock = null;
    clearInterval(this.timer);
    this.timer = null;
    this.offline = null; // back on this screen, an offline code is asked for again
    this.server = null;
    $('code-online').hidden = true;
    this.blank();
  }

  /** The screen stays on while the cashier scans (where the browser can). */
  keepScreenOn() {
    if (!navigator.wakeLock || this.wakeLock) return;
    navigator.wakeLock.request('screen').then((lock) => { this.wakeLock = lock; }, () => {});
  }

  async bindTo(merchant) {
    const digest = await bindingDigest(merchant.merchantId, merchant.terminalId || '');
    this.binding = { ...merchant, digest };
    if (this.chosenVersion() === 'v1') this.version = this.wallet.device('v3') ? 'v3' : 'v2';
  }

  chosenVersion() {
    const enrolled = this.wallet.devices.map((device) => device.version);
    const wanted = this.version || this.wallet.meta?.preferredVersion;
    if (enrolled.includes(wanted) && !(this.binding && wanted === 'v1')) return wanted;
    return enrolled.find((version) => !(this.binding && version === 'v1')) || null;
  }

  drawVersionTabs() {
    const box = $('versions');
    box.replaceChildren();
    for (const device of this.wallet.devices) {
      const button = element('button', { text: t(VERSION_LABELS[device.version]), attrs: { type: 'button', 'data-version': device.version } });
      button.setAttribute('aria-pressed', String(!this.offline && !this.server && device.version === this.chosenVersion()));
      if (this.binding && device.version === 'v1') button.disabled = true;
      button.addEventListener('click', () => {
        this.version = device.version;
        this.offline = null;
        this.server = null;
        this.drawOfflineControls();
        this.wallet.store.updateMeta((meta) => { meta.preferredVersion = device.version; }).catch(() => {});
        this.drawVersionTabs();
        this.refresh();
      });
      box.append(button);
    }
  }

  /** One new code at a time. A request during generation (a tap, a new version) is served
   * by one more code right after, never by a second generation racing the first. */
  refresh() {
    if (this.busy) {
      this.again = true;
      return this.busy;
    }
    this.busy = this.show().finally(() => {
      this.busy = null;
      if (this.again) {
        this.again = false;
        this.refresh();
      }
    });
    return this.busy;
  }

  /** The offline row shows when this phone holds an allowance it can spend now. */
  async drawOfflineControls() {
    let record = null;
    try { record = await this.wallet.offline.current(); } catch { /* no allowance store: none */ }
    this.allowance = record;
    $('offline-code').hidden = !record;
    $('offline-code-amount').placeholder = t('offline_amount');
    $('code-online').hidden = !this.offline;
    if (!record && this.offline) this.stopOffline();
  }

  /** The server's button shows while the browser says it is online. */
  drawServerButton() {
    $('code-server').hidden = navigator.onLine === false;
  }

  startServer() {
    this.offline = null;
    this.server = { fallback: null };
    this.drawVersionTabs();
    return this.refresh();
  }

  startOffline() {
    const currency = this.allowance?.currency;
    if (!currency) return null;
    const text = $('offline-code-amount').value.trim();
    let amountMinor = null;
    try {
      if (text) amountMinor = parseAmount(text, currency).amountMinor;
    } catch (error) {
      setMessage('code-error', describe(error));
      return null;
    }
    this.offline = { amountMinor };
    $('code-online').hidden = false;
    this.drawVersionTabs();
    return this.refresh();
  }

  stopOffline() {
    this.offline = null;
    $('code-online').hidden = true;
    this.drawVersionTabs();
    return this.refresh();
  }

  /** The next code: the server's, an offline one, or this phone's own. */
  make(version) {
    if (this.server) return this.wallet.onlineCode(version);
    if (this.offline) return this.wallet.offline.nextCode(this.offline.amountMinor, this.binding);
    return this.wallet.nextCode(version, this.binding);
  }

  async show() {
    const version = this.chosenVersion();
    if (!version && !this.offline && !this.server) return;
    setMessage('code-error', '');
    let code;
    try {
      code = await this.make(version);
    } catch (error) {
      this.blank();
      if (error.code === 'storage_lost') { this.onStorageLost(); return; }
      if (this.offline && OFFLINE_ERRORS[error.code]) {
        setMessage('code-error', t(OFFLINE_ERRORS[error.code]));
        return;
      }
      const why = error.code === 'counter_exhausted'
        ? t(error.reason === 'behind' ? 'clock_behind' : 'counter_used', { s: Math.ceil(error.retryAfterS) })
        : describe(error);
      if (!this.offline && !this.server && navigator.onLine !== false) {
        // This phone cannot make a code itself: the server issues one, and the screen says so.
        this.server = { fallback: why };
        return this.show();
      }
      if (this.server?.fallback) this.server = null; // the next tap tries this phone again
      if (error.code === 'counter_exhausted' && !this.server) {
        this.shown = { step: stepOf(this.wallet.deviceNowS()), failed: true };
      }
      setMessage('code-error', why);
      return;
    }
    try {
      this.draw(code);
    } catch (error) {
      this.blank();
      setMessage('code-error', describe(error));
    }
  }

  draw(code) {
    const box = $('code-box');
    const canvas = $('code-canvas');
    const barcode = code.version === 'v1';
    box.classList.toggle('barcode', barcode);
    box.classList.toggle('offline', code.version === 'v4');
    if (barcode) drawCode128(canvas, code.text);
    else drawQr(canvas, code.text);
    $('code-digits').textContent = barcode ? groupDigits(code.text) : '';
    $('code-digits').hidden = !barcode;
    Object.assign(box.dataset, { version: code.version });
    if (code.issuedOnline) {
      box.dataset.issuedOnline = 'true';
      delete box.dataset.step;
      delete box.dataset.counter;
    } else {
      delete box.dataset.issuedOnline;
      Object.assign(box.dataset, { step: String(code.step), counter: String(code.counter) });
    }
    const fallback = code.issuedOnline ? this.server?.fallback : null;
    $('code-note').hidden = !fallback;
    $('code-note').textContent = fallback ? t('server_code_fallback', { reason: fallback }) : '';
    box.setAttribute('aria-label', barcode ? groupDigits(code.text) : t(VERSION_LABELS[code.version]));
    this.shown = { ...code, text: undefined };
    const binding = code.issuedOnline ? null : this.binding; // the server's codes are not bound
    $('binding').hidden = !binding;
    $('code-unbind').hidden = !binding;
    if (binding) {
      $('binding').textContent = t('bound_to', {
        name: binding.name || binding.merchantId, merchant: binding.merchantId, terminal: binding.terminalId ? ` · ${binding.terminalId}` : '',
      });
    }
    const warning = this.wallet.clockWarning();
    setMessage('code-error', warning ? t(warning.key, warning.values) : '');
    if (code.version === 'v4') this.drawOfflineControls();
    this.tick();
  }

  blank() {
    clearCanvas($('code-canvas'));
    $('code-digits').textContent = '';
    const box = $('code-box');
    delete box.dataset.step;
    delete box.dataset.counter;
    delete box.dataset.issuedOnline;
    $('code-note').hidden = true;
    this.shown = null;
  }

  tick() {
    if (!this.shown || document.hidden || this.busy) return;
    const nowS = this.wallet.deviceNowS();
    if (this.shown.version === 'v4') { this.tickOffline(nowS); return; }
    if (this.shown.issuedOnline) { this.tickServer(nowS); return; }
    if (stepOf(nowS) !== this.shown.step) { this.refresh(); return; }
    if (this.shown.failed) return;
    const leftS = Math.max(0, (this.shown.step + 1) * 30 - nowS);
    $('countdown-bar').style.transform = `scaleX(${(leftS / 30).toFixed(3)})`;
    $('code-status').textContent = `${t('refresh_in', { s: Math.ceil(leftS) })} · ${t('code_of', { version: this.shown.version, counter: this.shown.counter + 1 })}`;
  }

  /** A server's code counts down to its expiry, with the note that the server issued it. */
  tickServer(nowS) {
    const leftS = this.shown.expiresAtS - nowS;
    if (leftS <= 0) {
      this.blank();
      setMessage('code-error', t('server_code_expired'));
      return;
    }
    $('countdown-bar').style.transform = `scaleX(${Math.min(1, leftS / (2 * STEP_SECONDS)).toFixed(3)})`;
    $('code-status').textContent = t('server_code_note', { s: Math.ceil(leftS) });
  }

  /** An offline code counts down to the end of the till's window and is then taken off the
   * screen, never replaced by itself. */
  tickOffline(nowS) {
    const leftS = this.shown.validUntilS - nowS;
    if (leftS <= 0) {
      this.blank();
      setMessage('code-error', t('offline_code_expired'));
      return;
    }
    const windowS = CODE_VALID_STEPS * STEP_SECONDS;
    $('countdown-bar').style.transform = `scaleX(${Math.min(1, leftS / windowS).toFixed(3)})`;
    const amount = money(formatAmount({ amountMinor: this.shown.amountLimitMinor, currency: this.shown.currency }), this.shown.currency);
    $('code-status').textContent = t('offline_code_line', { amount, s: Math.ceil(leftS) });
  }
}
