// The wallet as the page uses it: devices from storage, the learned clock offset, offline code
// generation with the counter stored first (docs/spec.md §2, §9), enrollment and the signed
// online calls. The screens hold no key and no counter: they ask this object.
import {
  COUNTER_MAX, FLAG_MERCHANT_BOUND, STEP_SECONDS, b64decode, b64encode, checkQrKeys, checkX25519Public,
  deviceScope, generateCode, generateSigningKey, hexToBytes, importHidingKey, importSymmetricDevice,
  makeKeyProof, readCodeKeys, sessionScope, stepOf,
} from '../core/index.js';
import { Api, ApiProblem, newIdempotencyKey } from './api.js';
import { claimCounter } from './counters.js';
import { OfflineAllowances } from './offline.js';
import { audit, openStore } from './store.js';

export const VERSIONS = ['v3', 'v2', 'v1'];
export const LABEL_PREFIX = 'Web wallet';
export const ONLINE_VERSIONS = ['v2', 'v1'];
export const CLOCK_SYNC_AGE_S_MAX = 7 * 86400;
const CLOCK_BACK_TOLERANCE_S = 120;

export class Wallet {
  static async open() {
    const store = await openStore();
    const wallet = new Wallet(store);
    await wallet.reload();
    await wallet.offline.prune().catch(() => []); // expired: their keys can pay nothing more
    return wallet;
  }

  constructor(store) {
    this.store = store;
    this.meta = null;
    this.devices = [];
    this.lost = [];
    const clock = { offsetS: () => this.offsetS(), learn: (serverS, localS) => this.learnClock(serverS, localS) };
    this.api = new Api(clock, '', (answer) => this.learnCodeKeys(answer.code_keys));
    this.offline = new OfflineAllowances(this);
  }

  async reload() {
    this.meta = await this.store.meta();
    const { usable, lost } = audit(this.meta, await this.store.devices());
    this.devices = usable.sort((a, b) => VERSIONS.indexOf(a.version) - VERSIONS.indexOf(b.version));
    this.lost = lost;
  }

  enrolled() { return this.devices.length > 0 && this.lost.length === 0; }

  /** True when this browser held a wallet that is now wholly or partly gone. */
  storageLost() { return this.lost.length > 0; }

  offsetS() { return this.meta?.offsetS ?? 0; }

  deviceNowS(localS = Date.now() / 1000) { return localS + this.offsetS(); }

  async learnClock(serverTimeS, localS) {
    if (!this.meta) { this.pendingClock = { serverTimeS, localS }; return; }
    this.meta = await this.store.updateMeta((meta) => {
      meta.offsetS = serverTimeS - localS;
      meta.syncedAtLocalS = localS;
      meta.highWaterLocalS = Math.max(meta.highWaterLocalS || 0, localS);
    });
  }

  /** Why the codes might be refused for the clock, or null (docs/api.md, "Clock re-sync"). */
  clockWarning(localS = Date.now() / 1000) {
    const meta = this.meta || {};
    if (meta.syncedAtLocalS === undefined) return { key: 'clock_never' };
    if (localS + CLOCK_BACK_TOLERANCE_S < (meta.highWaterLocalS || 0)) return { key: 'clock_back' };
    const ageS = localS - meta.syncedAtLocalS;
    if (ageS > CLOCK_SYNC_AGE_S_MAX) return { key: 'clock_old', values: { d: Math.floor(ageS / 86400) } };
    return null;
  }

  device(version) { return this.devices.find((device) => device.version === version) || null; }

  /** The device that signs online calls: the strongest enrolled version. */
  signer() {
    const device = this.devices[0];
    if (!device) throw new ApiProblem('not_enrolled', 0, 'this phone is not enrolled');
    return { device_id: device.device_id, credential: credentialOf(device) };
  }

  /** A fresh code, offline. The counter is on disk before this returns. */
  async nextCode(version, binding = null) {
    const device = this.device(version);
    if (!device) throw new ApiProblem('not_enrolled', 0, `no ${version} device on this phone`);
    if (binding && version === 'v1') throw new ApiProblem('binding_unsupported', 0, 'v1 codes cannot be merchant-bound');
    const localS = Date.now() / 1000;
    const nowS = this.deviceNowS(localS);
    const step = stepOf(nowS);
    const counterMax = device.counterMax ?? COUNTER_MAX[version];
    const { counter } = await this.store.claim(device.device_id, (state) => claimCounter(state, step, counterMax, STEP_SECONDS, nowS));
    await this.store.updateMeta((meta) => { meta.highWaterLocalS = Math.max(meta.highWaterLocalS || 0, localS); });
    const flags = binding ? FLAG_MERCHANT_BOUND : 0;
    const text = await generateCode(credentialOf(device), step, counter, flags, { binding: binding ? binding.digest : null });
    return { text, version, step, counter, flags, refreshInS: (step + 1) * STEP_SECONDS - nowS };
  }

  /** A code issued by the server, online (docs/spec.md §14), signed by this phone's signing
   * device: for when this phone cannot make one itself. Nothing is stored: the server made it
   * with its own key and counter. v3 is never issued (the server holds no v3 key): v2 then. */
  async onlineCode(version) {
    const wanted = ONLINE_VERSIONS.includes(version) ? version : ONLINE_VERSIONS[0];
    const data = await this.api.issueCode(this.signer(), wanted, newIdempotencyKey());
    return {
      text: data.code, version: data.version, issuedOnline: true, userVerified: Boolean(data.user_verified),
      expiresAtS: Date.parse(data.expires_at) / 1000,
    };
  }

  /** Log in once and enroll every live version; lost devices are revoked in the same step. */
  async enroll(user, password, { pin = '' } = {}) {
    const session = await this.api.login(user, password);
    const installId = crypto.randomUUID().slice(0, 8);
    if (!this.meta) {
      this.meta = await this.store.saveMeta({ user, installId, deviceIds: [], versions: {} }).then(() => this.store.meta());
      if (this.pendingClock) await this.learnClock(this.pendingClock.serverTimeS, this.pendingClock.localS);
    }
    const lostIds = this.lost.map((device) => device.device_id);
    if (lostIds.length) await this.store.removeDevices(lostIds);
    const deviceLabel = `${LABEL_PREFIX} · ${browserName()} · ${installId}`;
    const enrolledIds = [];
    for (const version of VERSIONS) {
      if (this.device(version)) continue;
      try {
        enrolledIds.push(await this.enrollOne(session.token, version, deviceLabel, user));
      } catch (error) {
        if (error instanceof ApiProblem && error.code === 'version_retired') continue;
        throw error;
      }
      await this.reload();
    }
    if (!this.devices.length) throw new ApiProblem('version_retired', 422, 'the server enrolls no code version');
    const signer = this.signer();
    if (pin) {
      await this.api.signed(signer, 'POST', '/v1/wallet/pin', { body: { password, pin }, idempotencyKey: newIdempotencyKey() });
    }
    const revoked = await this.revoke(lostIds, signer);
    await this.store.updateMeta((meta) => { meta.user = user; meta.lostNotice = null; });
    await this.reload();
    if (navigator.storage && navigator.storage.persist) navigator.storage.persist().catch(() => false);
    return { enrolledIds, revoked };
  }

  async enrollOne(token, version, label, user) {
    const body = { version, label };
    const idempotencyKey = newIdempotencyKey();
    const signing = await newProvenKey(version, body, await sessionScope(token, idempotencyKey));
    const grant = await this.api.enroll(token, body, idempotencyKey);
    if (grant.version !== version || typeof grant.device_id !== 'string') throw new ApiProblem('enrollment_invalid', 0, 'the server sent an unexpected grant');
    if (Array.isArray(grant.qr_keys)) checkQrKeys(grant.qr_keys); // before anything is stored
    const record = await deviceRecord(grant, signing, label, user);
    await this.store.addDevice(record, (meta) => {
      meta.versions = { ...(meta.versions || {}), [grant.device_id]: version };
      if (Array.isArray(grant.qr_keys)) meta.qrKeys = grant.qr_keys;
    });
    return grant.device_id;
  }

  /** Devices of this user that look like web wallets other than this one (to offer revoking). */
  async otherWebDevices() {
    const listed = await this.api.signed(this.signer(), 'GET', '/v1/wallet/devices');
    const mine = new Set(this.devices.map((device) => device.device_id));
    return listed.items.filter((item) => !item.revoked && !mine.has(item.device_id) && String(item.label || '').startsWith(LABEL_PREFIX));
  }

  /** Revoke `deviceIds` one by one, signed by `signer` (this phone's signing device unless
   * given); the ids revoked, in order. */
  async revoke(deviceIds, signer = null) {
    if (!deviceIds.length) return [];
    const by = signer || this.signer();
    for (const deviceId of deviceIds) {
      await this.api.signed(by, 'POST', `/v1/wallet/devices/${encodeURIComponent(deviceId)}/revoke`, { body: {}, idempotencyKey: newIdempotencyKey() });
    }
    return [...deviceIds];
  }

  /** Follow the server's advice for one of this phone's devices: when this phone already has
   * a device of the advised version, the old one is simply revoked; otherwise it is replaced
   * by the rotate call (signed by the old device, which the server revokes in the same
   * transaction; no password). The old device stays stored until the new grant is. */
  async reenroll(deviceId, version) {
    const oldDevice = this.devices.find((device) => device.device_id === deviceId);
    if (!oldDevice) throw new ApiProblem('not_found', 0, 'that device is not on this phone');
    const old = { device_id: oldDevice.device_id, credential: credentialOf(oldDevice) };
    if (this.device(version)) {
      await this.revoke([deviceId], old);
      await this.store.removeDevices([deviceId]);
      await this.reload();
      return { revoked_device_id: deviceId, version };
    }
    const body = { version };
    const idempotencyKey = newIdempotencyKey();
    const signing = await newProvenKey(version, body, deviceScope(old.device_id, idempotencyKey));
    const grant = await this.api.signed(old, 'POST', '/v1/wallet/devices/rotate', { body, idempotencyKey });
    if (grant.version !== version || typeof grant.device_id !== 'string') throw new ApiProblem('enrollment_invalid', 0, 'the server sent an unexpected grant');
    const record = await deviceRecord(grant, signing, oldDevice.label, this.meta.user);
    await this.store.addDevice(record, (meta) => { meta.versions = { ...(meta.versions || {}), [grant.device_id]: version }; });
    await this.store.removeDevices([deviceId]);
    await this.reload();
    return grant;
  }

  async forget() {
    try {
      await this.revoke(this.devices.map((device) => device.device_id));
    } finally {
      await this.store.clear();
      await this.reload();
    }
  }

  /** The server's current hiding (v1, v2) or seal (v3) key for this phone's devices
   * (docs/spec.md §7): a key it has not stored yet replaces the old one, and the next code is
   * made with it. The versions whose key changed. */
  async learnCodeKeys(raw) {
    const fresh = readCodeKeys(raw);
    const changed = [];
    for (const device of this.devices) {
      const entry = fresh[device.version];
      if (!entry || entry.keyId === device.codeKeyId) continue;
      const hidingKey = device.version === 'v3' ? null : await importHidingKey(entry.key);
      const stored = await this.store.updateDevice(device.device_id, (record) => {
        if (hidingKey) record.keys.hidingKey = hidingKey;
        else record.sealPublic = entry.key;
        record.codeKeyId = entry.keyId;
      });
      if (stored) changed.push(device.version);
    }
    if (changed.length) await this.reload();
    return changed;
  }

  setQrKeys(keys) {
    checkQrKeys(keys);
    return this.store.updateMeta((meta) => { meta.qrKeys = keys; }).then((meta) => { this.meta = meta; });
  }
}

/** For v3, a new key pair made here, its public half and its proof of possession bound to
 * `scope` added to `body` (docs/spec.md §6.1); null for the symmetric versions. */
async function newProvenKey(version, body, scope) {
  if (version !== 'v3') return null;
  const signing = await generateSigningKey();
  body.public_key = b64encode(signing.publicKeyRaw);
  body.proof = await makeKeyProof(signing.privateKey, version, signing.publicKeyRaw, scope);
  return signing;
}

/** The stored record of a new device: its keys imported non-extractable, no counter used. */
async function deviceRecord(grant, signing, label, user) {
  const record = {
    device_id: grant.device_id, version: grant.version, handle: hexToBytes(grant.handle), counterMax: grant.counter_max,
    label, user, enrolledAtS: Date.now() / 1000, counterState: { counters: {}, floor: -1 },
  };
  if (grant.version === 'v3') {
    record.keys = { signingKey: signing.privateKey };
    record.sealPublic = checkX25519Public(b64decode(grant.seal_public_key));
  } else {
    record.keys = await importSymmetricDevice(b64decode(grant.device_key), b64decode(grant.hiding_key));
  }
  return record;
}

export function credentialOf(device) {
  return {
    version: device.version, handle: device.handle, sealPublic: device.sealPublic,
    deviceKey: device.keys.deviceKey, apiKey: device.keys.apiKey, hidingKey: device.keys.hidingKey, signingKey: device.keys.signingKey,
  };
}

function browserName() {
  const agent = navigator.userAgent || '';
  const platform = /Android/.test(agent) ? 'Android' : /iPhone|iPad/.test(agent) ? 'iOS' : /Mac/.test(agent) ? 'Mac' : /Linux/.test(agent) ? 'Linux' : /Windows/.test(agent) ? 'Windows' : 'browser';
  const browser = /Edg\//.test(agent) ? 'Edge' : /Chrom/.test(agent) ? 'Chrome' : /Firefox/.test(agent) ? 'Firefox' : /Safari/.test(agent) ? 'Safari' : 'browser';
  return `${browser} on ${platform}`;
}
