// The wallet screen's offline allowance (docs/offline.md §1, "Consumer"): what is left and
// until when, taking a new one (online, PIN asked) and handing it back at once (§2.4). The
// balance tells the currency.
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
  /** onChanged: called after an allowance is taken or handed back (the balance changed). */
  constructor(wallet, { onChanged }) {
    this.wallet = wallet;
    this.onChanged = onChanged;
    this.currency = null;
    $('offline-form').addEventListener('submit', (event) => {
      event.preventDefault();
      this.take();
    });
    $('offline-return').addEventListener('click', () => this.handBack());
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
    let waiting = [];
    try {
      record = await this.wallet.offline.current(nowS);
      waiting = await this.wallet.offline.pendingReturns();
    } catch (error) {
      setMessage('offline-error', describe(error));
    }
    $('offline-return').hidden = !record && waiting.length === 0;
    $('offline-return-waiting').hidden = waiting.length === 0;
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
      await this.onChanged();
    } catch (error) {
      setMessage('offline-error', describe(error));
    } finally {
      button.disabled = false;
      await this.draw();
    }
  }

  /** The keys are deleted first, then the server is told what their codes reserved: what
   * those codes may still take stays held, the rest is back on the balance at once. */
  async handBack() {
    // It cannot be undone: the keys are gone before the server answers.
    if (!window.confirm(t('offline_return_confirm'))) return;
    setMessage('offline-error', '');
    const button = $('offline-return');
    button.disabled = true;
    try {
      const answers = await this.wallet.offline.handBack();
      notice(answers.map((answer) => t('offline_returned', {
        back: amountText(answer.returned_minor, answer.currency),
        held: amountText(answer.held_minor, answer.currency),
      })).join(' '));
      await this.onChanged();
    } catch (error) {
      setMessage('offline-error', describe(error));
    } finally {
      button.disabled = false;
      await this.draw();
    }
  }
}
