// The phone's offline allowance (docs/offline.md §2.1, §3.5): take one online (PIN asked),
// keep its four certificates and their keys in storage, spend it with v4 codes the till checks
// alone. The four keys are made here, non-extractable: only their public halves and proofs
// leave the phone. A code's counter and reservation are on disk before its text exists.
import {
  CERTIFICATES_PER_ALLOWANCE, STEP_SECONDS, allowanceLeft, b64urlEncode, bytesToHex, chooseCertificate,
  generateSigningKey, makeOfflineKeyProof, offlineCode, parseCertificate, stepOf,
} from '../core/index.js';
import { ApiProblem, newIdempotencyKey } from './api.js';

export const ALLOWANCES_PATH = '/v1/wallet/offline/allowances';
/** The server's default ladder (PAYCODE_OFFLINE_ALLOWANCES_MINOR): the amounts offered. */
export const LADDER_MINOR = Object.freeze([4000, 10000, 20000, 50000]);
/** A till takes a code's step from E - 2 to E + 1 (§4.2 step 6): with the till's clock at the
 * wallet's, a code is good until three steps after its own starts. */
export const CODE_VALID_STEPS = 3;
const ALLOWANCE_ID_RE = /^[A-Za-z0-9_-]{1,64}$/;

function invalidAnswer(detail) {
  return new ApiProblem('allowance_invalid', 0, detail);
}

/** Four fresh key pairs, each with its proof bound to the signing device and this request's
 * Idempotency-Key: what is stored before the request is sent, so a lost answer is retried
 * with the same keys and key. */
export async function newAllowanceRequest(deviceId, amountMinor, currency) {
  const idempotencyKey = newIdempotencyKey();
  const keys = [];
  for (let index = 0; index < CERTIFICATES_PER_ALLOWANCE; index++) {
    const { privateKey, publicKeyRaw } = await generateSigningKey();
    const proof = await makeOfflineKeyProof(privateKey, publicKeyRaw, deviceId, idempotencyKey, index);
    keys.push({ privateKey, publicKeyRaw, proof });
  }
  return { idempotencyKey, deviceId, amountMinor, currency, keys };
}

/** The request's body: the PIN is given here and never stored. */
export function allowanceBody(request, pin) {
  return {
    amount_minor: request.amountMinor,
    currency: request.currency,
    pin,
    keys: request.keys.map((key) => ({ public_key: b64urlEncode(key.publicKeyRaw), proof: key.proof })),
  };
}

function sameBytes(a, b) {
  return a.length === b.length && a.every((byte, i) => byte === b[i]);
}

/**
 * The stored allowance for the server's answer to `request`: every certificate parses, is in
 * the request's currency and certifies one of the request's keys, each key once; the caps
 * add up to at most the amount taken. `allowance_invalid` otherwise (nothing is stored).
 */
export function allowanceRecord(answer, request, { user, nowS }) {
  if (typeof answer?.allowance_id !== 'string' || !ALLOWANCE_ID_RE.test(answer.allowance_id)) {
    throw invalidAnswer('the server sent no allowance id');
  }
  if (answer.amount_minor !== request.amountMinor || answer.currency !== request.currency) {
    throw invalidAnswer('the server certified another amount or currency');
  }
  if (!Number.isSafeInteger(answer.expires_at_s) || !Number.isSafeInteger(answer.returns_at_s)) {
    throw invalidAnswer('the server sent no expiry');
  }
  const certs = answer.certificates;
  if (!Array.isArray(certs) || certs.length !== request.keys.length) {
    throw invalidAnswer(`an allowance has ${request.keys.length} certificates`);
  }
  const unused = new Set(request.keys.keys());
  let totalMinor = 0;
  const certificates = certs.map((cert) => {
    let fields;
    try {
      ({ fields } = parseCertificate(cert));
    } catch {
      throw invalidAnswer('a certificate is malformed');
    }
    const index = [...unused].find((i) => sameBytes(request.keys[i].publicKeyRaw, fields.offlinePk));
    if (index === undefined) throw invalidAnswer('a certificate is not for a key of this request');
    if (fields.currency !== request.currency) throw invalidAnswer('a certificate is in another currency');
    unused.delete(index);
    totalMinor += fields.totalCapMinor;
    return { cert, seed: request.keys[index].privateKey, nextCounter: 0, reservedMinor: 0 };
  });
  if (totalMinor > request.amountMinor) throw invalidAnswer('the certificates promise more than was taken');
  return {
    allowance_id: answer.allowance_id,
    user,
    device_id: request.deviceId,
    amount_minor: answer.amount_minor,
    currency: answer.currency,
    expires_at_s: answer.expires_at_s,
    returns_at_s: answer.returns_at_s,
    taken_at_s: nowS,
    certificates,
    lastIndex: -1,
  };
}

/** A refusal the server decided (a 4xx other than a conflict in progress): the request's keys
 * were certified for nothing and are dropped. A lost or unknown answer keeps them. */
export function finalRefusal(error) {
  return error instanceof ApiProblem && error.status >= 400 && error.status < 500 && error.status !== 409;
}

/** The allowance to spend at `nowS`: this user's, not expired, not being handed back, the
 * newest. */
export function currentAllowance(records, user, nowS) {
  const live = records.filter((record) => record.user === user && nowS < record.expires_at_s && !record.returning);
  live.sort((a, b) => b.taken_at_s - a.taken_at_s);
  return live[0] ?? null;
}

/** The hand-back report (docs/offline.md §2.4): per certificate its id, the codes made and
 * the money they reserved, from the wallet's own record. */
export function handBackReport(record) {
  return record.certificates.map((entry) => ({
    cert_id: bytesToHex(parseCertificate(entry.cert).fields.certId),
    counters_used: entry.nextCounter,
    reserved_minor: entry.reservedMinor,
  }));
}

/** The record kept while its hand-back is sent: the certificates and their keys gone, the
 * report and its Idempotency-Key kept so that an unanswered hand-back is sent again as it was.
 * A record already returning is kept as it is. */
export function returningRecord(record, idempotencyKey) {
  if (record.returning) return record;
  return {
    ...record,
    certificates: [],
    returning: { idempotencyKey, certificates: handBackReport(record) },
  };
}

/** This user's hand-backs begun and not answered yet. */
export function pendingReturns(records, user) {
  return records.filter((record) => record.user === user && record.returning);
}

/** A hand-back's refusal the server decided (a 4xx other than a request in progress or a
 * rate limit): retrying would hear it again. The keys are gone either way, and the server
 * sweeps what is left at returns_at_s. */
export function returnAnswered(error) {
  return error instanceof ApiProblem && error.status >= 400 && error.status < 500 && error.status !== 409 && error.status !== 429;
}

/** Forgotten at `nowS`: an expired allowance (its keys can pay nothing more), and a hand-back
 * still unanswered once the server has swept the allowance back anyway. */
export function forgotten(record, nowS) {
  return record.returning ? nowS >= record.returns_at_s : nowS >= record.expires_at_s;
}

/** What the wallet screen says of an allowance: {leftMinor, codes, totalMinor}. */
export function allowanceSummary(record, nowS) {
  const { amountMinor, codes } = allowanceLeft(record, nowS);
  return { leftMinor: amountMinor, codes, totalMinor: record.amount_minor };
}

/** The offline allowances of a Wallet (wallet.js): its store, its signer and its clock. */
export class OfflineAllowances {
  constructor(wallet) {
    this.wallet = wallet;
  }

  get store() { return this.wallet.store; }

  async current(nowS = this.wallet.deviceNowS()) {
    return currentAllowance(await this.store.allowances(), this.wallet.meta?.user, nowS);
  }

  /** POST /v1/wallet/offline/allowances, signed; the stored record. */
  async take(amountMinor, currency, pin) {
    const signer = this.wallet.signer();
    let request = await this.store.pendingAllowanceRequest();
    const same = request && request.deviceId === signer.device_id && request.amountMinor === amountMinor && request.currency === currency;
    if (!same) {
      if (request) await this.store.dropAllowanceRequest(request.idempotencyKey);
      request = await newAllowanceRequest(signer.device_id, amountMinor, currency);
      await this.store.saveAllowanceRequest(request);
    }
    let answer;
    try {
      answer = await this.wallet.api.signed(signer, 'POST', ALLOWANCES_PATH, {
        body: allowanceBody(request, pin), idempotencyKey: request.idempotencyKey,
      });
    } catch (error) {
      if (finalRefusal(error)) await this.store.dropAllowanceRequest(request.idempotencyKey);
      throw error;
    }
    const record = allowanceRecord(answer, request, { user: this.wallet.meta?.user, nowS: this.wallet.deviceNowS() });
    await this.store.saveAllowance(record, request.idempotencyKey);
    return record;
  }

  /** A v4 code of the current allowance, for `amountMinor` (null: what one code can pay) and
   * bound to `binding` ({digest}) when given. Its counter and reservation are stored first. */
  async nextCode(amountMinor = null, binding = null) {
    const nowS = this.wallet.deviceNowS();
    const record = await this.current(nowS);
    if (!record) throw new ApiProblem('offline_none', 0, 'no offline allowance on this phone');
    const choice = await this.store.claimOffline(record.allowance_id, (stored) => chooseCertificate(stored, { amountMinor, nowS }));
    const text = await offlineCode(choice, { nowS, binding: binding ? binding.digest : null });
    const step = stepOf(nowS);
    return {
      text, version: 'v4', step, counter: choice.counter, certificate: choice.index,
      amountLimitMinor: choice.amountLimitMinor, currency: record.currency,
      validUntilS: (step + CODE_VALID_STEPS) * STEP_SECONDS,
    };
  }

  /** This user's hand-backs not answered yet. */
  async pendingReturns() {
    return pendingReturns(await this.store.allowances(), this.wallet.meta?.user);
  }

  /** Hand back the current allowance now (online), after finishing any hand-back an earlier
   * attempt left unanswered: the keys are deleted and the report stored before anything is
   * sent (docs/offline.md §2.4). Returns the server's answers ({returned_minor, held_minor,
   * balance_minor, ...}); `offline_none` when there is nothing to hand back. */
  async handBack() {
    const record = await this.current();
    if (record) {
      const key = newIdempotencyKey();
      await this.store.updateAllowance(record.allowance_id, (stored) => returningRecord(stored, key));
    }
    const waiting = await this.pendingReturns();
    if (waiting.length === 0) throw new ApiProblem('offline_none', 0, 'no offline allowance on this phone');
    const answers = [];
    for (const pending of waiting) answers.push(await this.sendReturn(pending));
    return answers;
  }

  async sendReturn(record) {
    const path = `${ALLOWANCES_PATH}/${encodeURIComponent(record.allowance_id)}/return`;
    const drop = () => this.store.removeAllowances((stored) => stored.allowance_id === record.allowance_id);
    let answer;
    try {
      answer = await this.wallet.api.signed(this.wallet.signer(), 'POST', path, {
        body: { certificates: record.returning.certificates }, idempotencyKey: record.returning.idempotencyKey,
      });
    } catch (error) {
      if (returnAnswered(error)) await drop();
      throw error;
    }
    await drop();
    return { ...answer, currency: record.currency };
  }

  /** Allowances past their expiry lose their keys: nothing can spend them any more. */
  prune(nowS = this.wallet.deviceNowS()) {
    return this.store.removeAllowances((record) => forgotten(record, nowS));
  }
}
