// Binding a shop from the wallet screen (docs/api.md, "Points mandates"; docs/spec.md §16):
// the form's numbers become the consent, the phone's device key signs its exact bytes
// (src/core/mandateConsent.js, the bytes the server rebuilds and verifies), and
// POST /v1/wallet/mandates stores it. The same device signs the consent and the request: the
// server checks the consent's signature under the calling device's key.
import { consentMessage, signRequest } from '../core/index.js';
import { newIdempotencyKey } from './api.js';
import { $, describe, notice, setMessage } from './dom.js';
import { t } from './i18n.js';
import { FormProblem, bindingBody, consentFromForm, pointsText } from './mandates.js';

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
    let consent;
    try {
      signer = this.wallet.signer();
      consent = consentFromForm(this.fields(), { deviceId: signer.device_id, currency: this.currency, nowS: this.wallet.deviceNowS() });
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
      const signature = await signRequest(signer.credential, consentMessage(consent));
      const answer = await this.wallet.api.signed(signer, 'POST', '/v1/wallet/mandates', {
        body: bindingBody(consent, signature), idempotencyKey: newIdempotencyKey(),
      });
      notice(t('mandate_bound', {
        merchant: answer.merchant, payment: pointsText(answer.cap_per_payment_points), day: pointsText(answer.cap_per_day_points),
      }));
      for (const id of ['mandate-merchant', 'mandate-reference']) $(id).value = '';
      await this.onBound(answer);
    } catch (error) {
      setMessage('mandate-form-error', describe(error));
    } finally {
      button.disabled = false;
    }
  }
}
