// The wallet API over fetch, same origin (docs/api.md, "Wallet part"). Every answer's
// server_time refreshes the clock offset; a signed call refused because the phone's clock
// jumped is signed again once with the new offset. Errors become ApiProblem with the server's
// stable code; a network failure is `server_unreachable`.
import { signedHeaders, utf8 } from '../core/index.js';

export const RESIGN_OFFSET_S_MIN = 30;
const TIMEOUT_MS = 15000;

export class ApiProblem extends Error {
  constructor(code, status, detail, body = {}) {
    super(detail || code);
    this.code = code;
    this.status = status;
    this.detail = detail;
    this.body = body;
  }
}

export function newIdempotencyKey() {
  return crypto.randomUUID();
}

export class Api {
  /** clock: {offsetS(), learn(serverTimeS, localS)}; base: the server's origin ('' = same);
   * onSigned: called with every signed call's answer (the wallet learns code keys from it). */
  constructor(clock, base = '', onSigned = null) {
    this.clock = clock;
    this.base = base;
    this.onSigned = onSigned;
  }

  async send(method, path, { body, headers = {} } = {}) {
    const text = body === undefined ? '' : JSON.stringify(body);
    const init = { method, headers: { Accept: 'application/json', ...headers }, cache: 'no-store', credentials: 'omit' };
    if (body !== undefined) {
      init.body = text;
      init.headers['Content-Type'] = 'application/json';
    }
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), TIMEOUT_MS);
    let response;
    try {
      response = await fetch(this.base + path, { ...init, signal: controller.signal });
    } catch (error) {
      throw new ApiProblem('server_unreachable', 0, String(error && error.message ? error.message : error));
    } finally {
      clearTimeout(timer);
    }
    let data = {};
    try {
      data = await response.json();
    } catch {
      data = {};
    }
    if (typeof data.server_time === 'number') await this.clock.learn(data.server_time, Date.now() / 1000);
    if (!response.ok) {
      throw new ApiProblem(data.code || `http_${response.status}`, response.status, data.detail || response.statusText, data);
    }
    return data;
  }

  /** A device-signed call; `device` = {device_id, credential}. */
  async signed(device, method, path, { body, idempotencyKey } = {}) {
    const attempt = async () => {
      const bodyBytes = body === undefined ? new Uint8Array() : utf8(JSON.stringify(body));
      const nowS = Date.now() / 1000 + this.clock.offsetS();
      const headers = await signedHeaders(device.credential, device.device_id, method, path, bodyBytes, nowS);
      if (idempotencyKey) headers['Idempotency-Key'] = idempotencyKey;
      return this.send(method, path, { body, headers });
    };
    const offsetBefore = this.clock.offsetS();
    let data;
    try {
      data = await attempt();
    } catch (error) {
      const moved = Math.abs(this.clock.offsetS() - offsetBefore) >= RESIGN_OFFSET_S_MIN;
      if (!(error instanceof ApiProblem && error.status === 401 && moved)) throw error;
      data = await attempt();
    }
    if (this.onSigned) await this.onSigned(data);
    delete data.code_keys; // key material stops here: no screen shows it
    return data;
  }

  /** A single-use code the server issues online (docs/api.md, "Codes issued online"): for a
   * phone that cannot make one itself. `version` is 'v2' or 'v1'; one key per attempt. */
  issueCode(device, version, idempotencyKey) {
    return this.signed(device, 'POST', '/v1/wallet/codes', { body: { version }, idempotencyKey });
  }

  login(user, password) { return this.send('POST', '/v1/wallet/sessions', { body: { user, password } }); }

  enroll(token, body, idempotencyKey) {
    return this.send('POST', '/v1/wallet/devices', {
      body, headers: { Authorization: `Bearer ${token}`, 'Idempotency-Key': idempotencyKey },
    });
  }
}
