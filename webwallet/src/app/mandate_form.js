// Binding a shop from the wallet screen (docs/api.md, "Points mandates"; docs/spec.md §16):
// the form's numbers become the consent, the phone's device key signs its exact bytes
// (src/core/mandateConsent.js, the bytes the server rebuilds and verifies), and
// POST /v1/wallet/mandates stores it. The same device signs the consent and the request: the
// server checks the consent's signature under the calling device's key.
import { consentMessage, signRequest } from '../core/index.js';
import { newIdempotencyKey } from './api.js';
import { $, describe, notice, setMessage } from './dom.js';
import { t } from './i18n.js';
import { FormProblem, answerMayBeLost, bindingAttempt, bindingBody, consentFromForm, pointsText } from './mandates.js';

const INPUTS = {
  merchant_id: 'mandate-merchant',
  rate_points: 'mandate-rate-points',
  rate_amount: 'mandate-rate-amount',
  cap_per_payment_points: 'mandate-cap-payment',
  cap_per_day_points: 'mandate-cap-day',
  days: 'mandate-days',
  reference: 'mandate-reference',
};

export class MandateForm {
  /** onBound: called with the server's answer (the new mandate) once it is stored. */
  constructor(wallet, { onBound }) {
    this.wallet = wallet;
    this.onBound = onBound;
    this.currency = null;
    this.unanswered = null; // the last attempt whose answer never came: a retry resends it
    $('mandate-form').addEventListener('submit', (event) => {
      event.preventDefault();
      this.bind();
    });
  }

  /** The balance's currency: the only one a shop of this user's server can take. */
  setCurrency(currency) {
    this.currency = currency;
    $('mandate-rate-amount-label').textContent = currency ? t('mandate_rate_amount_in', { currency }) : t('mandate_rate_amount');
  }

  fields() {
    return Object.fromEntries(Object.entries(INPUTS).map(([name, id]) => [name, $(id).value]));
  }

  async bind() {
    setMessage('mandate-form-error', '');
    if (!this.currency) {
      setMessage('mandate-form-error', t('mandate_no_currency'));
      return;
    }
    let signer;
    let attempt;
    try {
      signer = this.wallet.signer();
      const fields = this.fields();
      const context = { deviceId: signer.device_id, currency: this.currency, nowS: this.wallet.deviceNowS() };
      attempt = bindingAttempt(this.unanswered, { ...fields, currency: this.currency, device: signer.device_id }, () => ({
        consent: consentFromForm(fields, context), idempotencyKey: newIdempotencyKey(),
      }));
    } catch (error) {
      // Nothing was signed or sent: a field to correct, or no enrolled device.
      if (!(error instanceof FormProblem)) {
        setMessage('mandate-form-error', describe(error));
        return;
      }
      setMessage('mandate-form-error', t(error.key, error.values));
      $(INPUTS[error.field]).focus();
      return;
    }
    const button = $('mandate-submit');
    button.disabled = true;
    try {
      // Both signature kinds are deterministic: a resent attempt is byte for byte the same.
      const signature = await signRequest(signer.credential, consentMessage(attempt.consent));
      this.unanswered = attempt;
      const answer = await this.wallet.api.signed(signer, 'POST', '/v1/wallet/mandates', {
        body: bindingBody(attempt.consent, signature), idempotencyKey: attempt.idempotencyKey,
      });
      this.unanswered = null;
      notice(t('mandate_bound', {
        merchant: answer.merchant, payment: pointsText(answer.cap_per_payment_points), day: pointsText(answer.cap_per_day_points),
      }));
      for (const id of ['mandate-merchant', 'mandate-reference']) $(id).value = '';
      await this.onBound(answer);
    } catch (error) {
      if (!answerMayBeLost(error)) this.unanswered = null;
      setMessage('mandate-form-error', describe(error));
    } finally {
      button.disabled = false;
    }
  }
}
