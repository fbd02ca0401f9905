// Small DOM helpers. Text only ever goes in through textContent: nothing the server or a
// scanned QR says is parsed as HTML.
import { t } from './i18n.js';

export const $ = (id) => document.getElementById(id);

const SCREENS = ['loading', 'enroll', 'code', 'wallet', 'scan'];
const TABS = { code: 'nav-code', wallet: 'nav-wallet', scan: 'nav-scan' };

export function showScreen(name) {
  for (const screen of SCREENS) $(`screen-${screen}`).hidden = screen !== name;
  $('bar').hidden = name === 'loading' || name === 'enroll';
  for (const [screen, tab] of Object.entries(TABS)) {
    if (screen === name) $(tab).setAttribute('aria-current', 'page');
    else $(tab).removeAttribute('aria-current');
  }
  document.body.dataset.screen = name;
}

export function setMessage(id, text) {
  const element = $(id);
  element.textContent = text || '';
  element.hidden = !text;
}

let noticeTimer = null;
export function notice(text, ms = 6000) {
  setMessage('notice', text);
  clearTimeout(noticeTimer);
  if (text) noticeTimer = setTimeout(() => setMessage('notice', ''), ms);
}

/** The user-facing sentence for an error: the server's detail, or ours for the stable codes
 * we explain better; never a stack trace. */
export function describe(error) {
  if (!error) return '';
  if (error.code === 'server_unreachable') return t('server_unreachable');
  if (error.code === 'pin_required') return t('pin_required');
  const detail = error.detail || error.message || String(error);
  return error.code ? `${detail} [${error.code}]` : t('error_generic', { detail });
}

export function element(tag, { text, className, attrs = {} } = {}, children = []) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  if (className) node.className = className;
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  for (const child of children) node.append(child);
  return node;
}

export function money(amount, currency) {
  return `${amount} ${currency}`;
}
