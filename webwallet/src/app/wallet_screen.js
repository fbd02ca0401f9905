// Online: balance, history with refunds, payments waiting for the PIN, points mandates,
// re-enrollment advice, the clock and this user's devices. Nothing here is needed to make a code.
import { newIdempotencyKey } from './api.js';
import { $, describe, element, money, notice, setMessage } from './dom.js';
import { LANGUAGE, t } from './i18n.js';
import { MandatesPanel } from './mandates_panel.js';
import { OfflinePanel } from './offline_panel.js';

const PENDING_POLL_MS = 3000;
const HISTORY_LIMIT = 20;

export class WalletScreen {
  constructor(wallet, { onChanged }) {
    this.wallet = wallet;
    this.onChanged = onChanged;
    this.poll = null;
    this.offline = new OfflinePanel(wallet, { onChanged: () => this.load() });
    this.mandates = new MandatesPanel(wallet);
    $('refresh').addEventListener('click', () => this.load());
    $('resync').addEventListener('click', () => this.load());
    $('forget').addEventListener('click', () => this.forget());
  }

  enter() {
    clearInterval(this.poll);
    this.poll = setInterval(() => { if (!document.hidden) this.loadPending().catch(() => {}); }, PENDING_POLL_MS);
    return this.load();
  }

  leave() { clearInterval(this.poll); this.poll = null; }

  signed(method, path, options) { return this.wallet.api.signed(this.wallet.signer(), method, path, options); }

  async load() {
    setMessage('wallet-error', '');
    await this.offline.draw();
    try {
      const balance = await this.signed('GET', '/v1/wallet/balance');
      this.drawBalances(balance);
      this.mandates.drawBalance(balance);
      await this.mandates.load(); // its own errors go to its own line: the rest still loads
      const history = await this.signed('GET', `/v1/wallet/history?limit=${HISTORY_LIMIT}`);
      this.drawHistory(history.items);
      await this.loadPending();
      const devices = await this.signed('GET', '/v1/wallet/devices');
      this.drawDevices(devices.items);
      const mine = new Set(this.wallet.devices.map((device) => device.device_id));
      this.drawAdvice(devices.items.find((item) => mine.has(item.device_id) && !item.revoked && item.reenroll));
    } catch (error) {
      setMessage('wallet-error', describe(error));
    }
    this.drawClock();
  }

  async loadPending() {
    const pending = await this.signed('GET', '/v1/wallet/pending');
    this.drawPending(pending.items);
  }

  drawBalances(balance) {
    this.offline.setCurrency(balance.accounts[0]?.currency ?? null);
    $('balances').replaceChildren(...balance.accounts.map((account) => element('li', { text: money(account.balance, account.currency) })));
  }

  /** The server's advice for one of this phone's devices (docs/api.md, "Re-enrollment
   * advice"), one button to follow it. */
  drawAdvice(device) {
    const box = $('reenroll');
    box.hidden = !device;
    if (!device) return;
    const advice = device.reenroll;
    const button = element('button', { text: t('reenroll_now'), attrs: { type: 'button', id: 'reenroll-now' } });
    button.addEventListener('click', async () => {
      button.disabled = true;
      try {
        await this.wallet.reenroll(device.device_id, advice.version);
        notice(t('reenrolled', { version: advice.version }));
        await this.onChanged();
        await this.load();
      } catch (error) {
        setMessage('wallet-error', describe(error));
        button.disabled = false;
      }
    });
    box.replaceChildren(element('p', { text: t('reenroll_advice', advice) }), button);
  }

  drawHistory(items) {
    const list = $('history');
    if (!items.length) { list.replaceChildren(element('li', { text: t('no_history'), className: 'muted' })); return; }
    list.replaceChildren(...items.map((item) => {
      const when = new Date(item.created_at).toLocaleString(LANGUAGE);
      const refunded = item.refunded && Number(item.refunded.replace('.', '')) > 0 ? ` · ${t('refunded', { amount: money(item.refunded, item.currency) })}` : '';
      // A points redemption's amount is the whole price; only its money leg left the balance.
      const points = item.points ? ` · ${t('paid_with_points', { money: money(item.points.money, item.currency), points: String(item.points.points) })}` : '';
      const what = element('span', { className: 'what', text: item.merchant }, [element('span', { className: 'sub', text: `${when} · ${t(`status_${item.status}`)}${refunded}${points}` })]);
      return element('li', { attrs: { 'data-payment': item.payment_id } }, [what, element('span', { className: 'sum', text: `-${money(item.amount, item.currency)}` })]);
    }));
  }

  drawPending(items) {
    $('pending-box').hidden = !items.length;
    const list = $('pending');
    const typing = list.contains(document.activeElement);
    if (typing && items.length) return; // never wipe a PIN being typed
    list.replaceChildren(...items.map((item) => this.pendingItem(item)));
  }

  pendingItem(item) {
    const pin = element('input', { attrs: { type: 'password', inputmode: 'numeric', maxlength: '6', autocomplete: 'off', 'aria-label': t('pin'), placeholder: t('pin'), class: 'pending-pin' } });
    const confirm = element('button', { text: t('confirm'), className: 'primary', attrs: { type: 'button', class: 'primary confirm' } });
    const decline = element('button', { text: t('decline'), attrs: { type: 'button', class: 'decline' } });
    const error = element('p', { className: 'error', attrs: { role: 'alert' } });
    const path = `/v1/wallet/payments/${encodeURIComponent(item.payment_id)}`;
    const act = async (what, body) => {
      confirm.disabled = decline.disabled = true;
      try {
        const payment = await this.signed('POST', `${path}/${what}`, { body, idempotencyKey: newIdempotencyKey() });
        notice(what === 'confirm' ? t('confirmed', { amount: money(payment.amount ?? item.amount, item.currency), merchant: item.merchant }) : t('declined'));
        pin.value = '';
        await this.load();
      } catch (problem) {
        error.textContent = describe(problem);
        confirm.disabled = decline.disabled = false;
      }
    };
    confirm.addEventListener('click', () => act('confirm', { pin: pin.value.trim() }));
    decline.addEventListener('click', () => act('decline', {}));
    const title = element('span', { className: 'what', text: `${item.merchant}: ${money(item.amount, item.currency)}` });
    return element('li', { className: 'pending-item', attrs: { 'data-payment': item.payment_id } }, [title, pin, element('div', { className: 'actions' }, [confirm, decline]), error]);
  }

  drawDevices(items) {
    const mine = new Set(this.wallet.devices.map((device) => device.device_id));
    $('devices').replaceChildren(...items.map((item) => {
      const state = item.revoked ? t('device_revoked') : mine.has(item.device_id) ? t('device_current') : '';
      const row = element('li', {}, [element('span', { className: 'what', text: `${item.label} · ${item.version}` }, [element('span', { className: 'sub', text: `${item.created_at.slice(0, 10)} ${state}` })])]);
      if (!item.revoked && !mine.has(item.device_id)) {
        const revoke = element('button', { text: t('revoke'), attrs: { type: 'button' } });
        revoke.addEventListener('click', async () => {
          revoke.disabled = true;
          try { await this.wallet.revoke([item.device_id]); await this.load(); } catch (error) { setMessage('wallet-error', describe(error)); }
        });
        row.append(revoke);
      }
      return row;
    }));
  }

  drawClock() {
    const meta = this.wallet.meta || {};
    const when = meta.syncedAtLocalS ? new Date(meta.syncedAtLocalS * 1000).toLocaleString(LANGUAGE) : t('never');
    $('clock').textContent = t('clock_line', { o: (meta.offsetS ?? 0).toFixed(1), when });
  }

  async forget() {
    if (!window.confirm(t('forget_confirm'))) return;
    try { await this.wallet.forget(); } catch (error) { notice(describe(error)); }
    await this.onChanged();
  }
}
