// Scan a shop's QR (camera or photo): show the payee as the server's signature proves it
// (docs/spec.md §12), pay it online, or make a code bound to that shop (offline, §10).
import { readCollection, verifySignature } from '../core/index.js';
import { newIdempotencyKey } from './api.js';
import { $, describe, money, setMessage } from './dom.js';
import { t } from './i18n.js';
import { QrReader } from './qr_reader.js';

const SCAN_SECONDS_MAX = 60;

export class ScanScreen {
  constructor(wallet, { onBind }) {
    this.wallet = wallet;
    this.onBind = onBind;
    this.stream = null;
    this.scanned = null;
    $('scan-camera').addEventListener('click', () => this.startCamera());
    $('scan-file').addEventListener('change', (event) => this.fromFile(event.target.files[0]));
    $('pay-form').addEventListener('submit', (event) => { event.preventDefault(); this.pay(); });
    $('bind-code').addEventListener('click', () => this.bind());
  }

  enter() { setMessage('scan-error', ''); }

  leave() { this.stopCamera(); }

  async startCamera() {
    setMessage('scan-error', '');
    try {
      this.stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: 'environment' }, audio: false });
    } catch {
      setMessage('scan-error', t('scan_no_camera'));
      return;
    }
    const video = $('scan-video');
    video.srcObject = this.stream;
    video.hidden = false;
    await video.play();
    const reader = await QrReader.open();
    const deadline = performance.now() + SCAN_SECONDS_MAX * 1000;
    while (this.stream && performance.now() < deadline) {
      const text = await reader.read(video);
      if (text) { this.stopCamera(); await this.read(text); return; }
      await new Promise((resolve) => setTimeout(resolve, 120));
    }
    this.stopCamera();
  }

  stopCamera() {
    if (this.stream) for (const track of this.stream.getTracks()) track.stop();
    this.stream = null;
    $('scan-video').hidden = true;
  }

  async fromFile(file) {
    if (!file) return;
    setMessage('scan-error', '');
    try {
      const bitmap = await createImageBitmap(file);
      const text = await (await QrReader.open()).read(bitmap);
      if (!text) { setMessage('scan-error', t('scan_none')); return; }
      await this.read(text);
    } catch (error) {
      setMessage('scan-error', describe(error));
    } finally {
      $('scan-file').value = '';
    }
  }

  /** Read a scanned payload: parse strictly, then check the server's signature. */
  async read(text) {
    $('payee').hidden = true;
    setMessage('pay-result', '');
    let fields;
    try {
      fields = readCollection(text);
    } catch (error) {
      setMessage('scan-error', `${t('not_collection')} ${error.message}`);
      return;
    }
    let verdict = await verifySignature(text, this.wallet.meta?.qrKeys || []);
    if (verdict === 'unknown_key') {
      try {
        const answer = await this.wallet.api.signed(this.wallet.signer(), 'GET', '/v1/wallet/qr-keys');
        await this.wallet.setQrKeys(answer.keys);
        verdict = await verifySignature(text, answer.keys);
      } catch { /* offline: stays unknown */ }
    }
    this.scanned = { text, fields, verdict };
    this.drawPayee();
  }

  drawPayee() {
    const { fields, verdict } = this.scanned;
    const name = fields.displayName || fields.merchantName;
    const city = fields.displayCity || fields.merchantCity;
    $('payee-name').textContent = name;
    const line = $('payee-verdict');
    line.textContent = verdict === 'verified' ? t('verified', { name, city }) : t(verdict);
    line.className = verdict === 'verified' ? 'verified' : 'unverified';
    $('payee-amount').textContent = fields.amountText ? money(fields.amountText, fields.currency) : '';
    $('pay-amount-label').hidden = Boolean(fields.amountText);
    $('pay-pin-label').hidden = true;
    $('pay-submit').disabled = verdict !== 'verified';
    $('bind-code').disabled = verdict === 'altered';
    $('payee').hidden = false;
  }

  async pay() {
    const { text, fields } = this.scanned;
    const body = { qr_payload: text };
    const amount = fields.amountText || $('pay-amount').value.trim();
    if (amount) body.amount = amount;
    const pin = $('pay-pin').value.trim();
    if (pin) body.pin = pin;
    $('pay-submit').disabled = true;
    try {
      const payment = await this.wallet.api.signed(this.wallet.signer(), 'POST', '/v1/wallet/payments', { body, idempotencyKey: newIdempotencyKey() });
      setMessage('pay-result', t('paid', { amount: money(payment.amount, payment.currency), merchant: payment.merchant }));
      $('pay-pin').value = '';
    } catch (error) {
      if (error.code === 'pin_required') $('pay-pin-label').hidden = false;
      setMessage('pay-result', describe(error));
      $('pay-submit').disabled = false;
    }
  }

  async bind() {
    const { fields } = this.scanned;
    await this.onBind({ merchantId: fields.merchantId, terminalId: fields.terminalId || '', name: fields.localName || fields.merchantName });
  }
}
