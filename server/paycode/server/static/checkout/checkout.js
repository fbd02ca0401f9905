// The hosted checkout page's only script (docs/api.md, "Hosted checkout"): poll the order's
// status, show it without reloading, and once it is paid take the customer back to the shop
// with the server-signed result. Polling, bounded: every pollMs while the page is open, at
// most POLLS_MAX times, backing off after a failed poll; it stops at any final state.
'use strict';

(function () {
  const POLLS_MAX = 1800;
  const BACKOFF_MS_MAX = 30000;
  const RETURN_DELAY_MS = 1200;
  const TEXT = {
    open: 'Waiting for payment',
    paid: 'Paid',
    expired: 'This payment expired',
    cancelled: 'The shop cancelled this payment',
  };
  const body = document.body;
  const pollMs = Number(body.dataset.pollMs) || 2000;
  let polls = 0;
  let failures = 0;

  function show(state) {
    const line = document.getElementById('status');
    body.dataset.status = state.status;
    line.textContent = TEXT[state.status] || state.status;
    line.className = 'status status-' + state.status;
    const pay = document.getElementById('pay');
    if (pay && state.status !== 'open') pay.hidden = true;
    const count = document.getElementById('count');
    if (count && state.payments_max) count.textContent = state.paid_count + ' of ' + state.payments_max + ' paid';
  }

  function goBack(url) {
    document.getElementById('back').hidden = false;
    setTimeout(function () { window.location.assign(url); }, RETURN_DELAY_MS);
  }

  async function poll() {
    polls += 1;
    try {
      const answer = await fetch(body.dataset.statusUrl, { cache: 'no-store', credentials: 'omit' });
      if (!answer.ok) throw new Error('status ' + answer.status);
      const state = await answer.json();
      failures = 0;
      show(state);
      if (state.return_to) { goBack(state.return_to); return; }
      if (state.status !== 'open') return;
    } catch (error) {
      failures += 1;
    }
    if (polls >= POLLS_MAX) return;
    setTimeout(poll, Math.min(pollMs * Math.pow(2, failures), BACKOFF_MS_MAX));
  }

  if (body.dataset.returnTo) goBack(body.dataset.returnTo);
  else if (body.dataset.status === 'open') setTimeout(poll, pollMs);
})();
