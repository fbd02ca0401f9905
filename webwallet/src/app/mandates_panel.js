// The wallet screen's points mandates (docs/api.md, "Points mandates"; docs/spec.md §16): the
// points balance, the shops allowed to take points with their rate, caps and today's use, and
// revoking one (binding a new shop is mandate_form.js). Revoking is asked twice in the page,
// with what it means, because the server applies it at once and nothing undoes it (a new
// binding is a new consent).
import { newIdempotencyKey } from './api.js';
import { $, describe, element, notice, setMessage } from './dom.js';
import { t } from './i18n.js';
import { MandateForm } from './mandate_form.js';
import { mandateView, pointsText, withAnswer } from './mandates.js';

export class MandatesPanel {
  constructor(wallet) {
    this.wallet = wallet;
    this.items = [];
    this.form = new MandateForm(wallet, { onBound: () => this.load() });
  }

  signed(method, path, options) { return this.wallet.api.signed(this.wallet.signer(), method, path, options); }

  /** From the balance answer: its `points` ({asset, balance}; absent from an older server)
   * and its currency, the one a shop is bound in. */
  drawBalance(balance) {
    this.form.setCurrency(balance.accounts[0]?.currency ?? null);
    const { points } = balance;
    const line = $('points-line');
    line.hidden = !points;
    if (points) line.textContent = t('points_line', { points: pointsText(points.balance) });
  }

  async load() {
    setMessage('mandates-error', '');
    try {
      const answer = await this.signed('GET', '/v1/wallet/mandates');
      this.items = answer.items;
      this.draw();
    } catch (error) {
      setMessage('mandates-error', describe(error));
    }
  }

  draw() {
    const list = $('mandates');
    if (!this.items.length) {
      list.replaceChildren(element('li', { text: t('mandates_none'), className: 'muted' }));
      return;
    }
    list.replaceChildren(...this.items.map((item) => this.row(item)));
  }

  row(item) {
    const view = mandateView(item);
    const head = element('span', { className: 'what', text: view.merchant }, [
      element('span', { className: `badge ${view.status}`, text: view.statusText }),
    ]);
    const lines = [view.rate, view.caps, view.today, view.until].filter(Boolean)
      .map((text) => element('span', { className: 'sub', text }));
    const row = element('li', { className: 'mandate', attrs: { 'data-mandate': item.mandate_id, 'data-status': view.status } }, [
      element('div', { className: 'mandate-head' }, [head]),
      element('div', { className: 'mandate-lines' }, lines),
    ]);
    if (view.active) row.append(this.revokeControls(item));
    return row;
  }

  /** "Revoke", then the warning with "Revoke now" and "Keep": nothing is sent before the second tap. */
  revokeControls(item) {
    const box = element('div', { className: 'mandate-revoke' });
    const start = element('button', { text: t('revoke'), attrs: { type: 'button', class: 'danger revoke' } });
    const warning = element('p', { className: 'warn', text: t('mandate_revoke_warning', { merchant: item.merchant }) });
    const now = element('button', { text: t('mandate_revoke_now'), attrs: { type: 'button', class: 'danger revoke-now' } });
    const keep = element('button', { text: t('mandate_keep'), attrs: { type: 'button', class: 'keep' } });
    const confirm = element('div', { className: 'mandate-confirm' }, [warning, element('div', { className: 'actions' }, [now, keep])]);
    const error = element('p', { className: 'error', attrs: { role: 'alert' } });
    confirm.hidden = true;
    start.addEventListener('click', () => { start.hidden = true; confirm.hidden = false; });
    keep.addEventListener('click', () => { confirm.hidden = true; start.hidden = false; });
    now.addEventListener('click', async () => {
      now.disabled = keep.disabled = true;
      error.textContent = '';
      try {
        const path = `/v1/wallet/mandates/${encodeURIComponent(item.mandate_id)}/revoke`;
        const answer = await this.signed('POST', path, { body: {}, idempotencyKey: newIdempotencyKey() });
        notice(t('mandate_revoked', { merchant: item.merchant }));
        this.items = withAnswer(this.items, answer);
        this.draw();
      } catch (problem) {
        error.textContent = describe(problem);
        now.disabled = keep.disabled = false;
      }
    });
    box.append(start, confirm, error);
    return box;
  }
}
