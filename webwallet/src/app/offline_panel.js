// The wallet screen's offline allowance (docs/offline.md §1, "Consumer"): what is left and
// until when, and taking a new one (online, PIN asked). The balance tells the currency.
import { formatAmount } from '../core/index.js';
import { $, describe, element, money, notice, setMessage } from './dom.js';
import { LANGUAGE, t } from './i18n.js';
import { LADDER_MINOR, allowanceSummary } from './offline.js';

const DEFAULT_LADDER_INDEX = LADDER_MINOR.length - 1;

function amountText(amountMinor, currency) {
  return money(formatAmount({ amountMinor, currency }), currency);
}

function whenText(unixS) {
  return new Date(unixS * 1000).toLocaleString(LANGUAGE, { dateStyle: 'medium', timeStyle: 'short' });
}

export class OfflinePanel {
  /** onTaken: called after an allowance is stored (the balance changed). */
  constructor(wallet, { onTaken }) {
    this.wallet = wallet;
    this.onTaken = onTaken;
    this.currency = null;
    $('offline-form').addEventListener('submit', (event) => {
      event.preventDefault();
      this.take();
    });
  }

  /** The currency the allowance is taken in: the balance's (the server refuses another). */
  setCurrency(currency) {
    if (currency === this.currency) return;
    this.currency = currency;
    const select = $('offline-take-amount');
    select.replaceChildren();
    if (!currency) return;
    LADDER_MINOR.forEach((amountMinor, i) => {
      const option = element('option', { text: amountText(amountMinor, currency), attrs: { value: String(amountMinor) } });
      if (i === DEFAULT_LADDER_INDEX) option.selected = true;
      select.append(option);
    });
  }

  async draw() {
    const nowS = this.wallet.deviceNowS();
    let record = null;
    try {
      record = await this.wallet.offline.current(nowS);
    } catch (error) {
      setMessage('offline-error', describe(error));
    }
    if (!record) {
      $('offline-line').textContent = t('offline_none');
      return;
    }
    const { leftMinor, codes, totalMinor } = allowanceSummary(record, nowS);
    $('offline-line').textContent = t('offline_line', {
      left: amountText(leftMinor, record.currency),
      total: amountText(totalMinor, record.currency),
      codes,
      when: whenText(record.expires_at_s),
    });
  }

  async take() {
    setMessage('offline-error', '');
    if (!this.currency) {
      setMessage('offline-error', t('offline_no_currency'));
      return;
    }
    const button = $('offline-take');
    const pin = $('offline-pin');
    button.disabled = true;
    try {
      const amountMinor = Number($('offline-take-amount').value);
      const record = await this.wallet.offline.take(amountMinor, this.currency, pin.value.trim());
      pin.value = '';
      notice(t('offline_taken', { amount: amountText(record.amount_minor, record.currency), when: whenText(record.expires_at_s) }));
      await this.onTaken();
    } catch (error) {
      setMessage('offline-error', describe(error));
    } finally {
      button.disabled = false;
      await this.draw();
    }
  }
}
