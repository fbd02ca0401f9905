// The wallet's storage: one IndexedDB database on this origin. Device keys are CryptoKey
// objects stored as such (structured clone): the non-extractable ones can sign and encrypt but
// can never be read back out, not even by this page. A device's counters live in the same
// record as its keys, so they vanish together or not at all; `meta` lists the devices that
// should exist, so a record the browser lost is noticed rather than silently re-created.
// Offline allowances (docs/offline.md §3.5) keep their certificates, keys, counters and
// reservations in one record each; a request being taken keeps its keys until answered.
import { validCounterState } from './counters.js';

const DB_NAME = 'paycode-wallet';
const DB_VERSION = 2;
const META_KEY = 'wallet';

function promised(request) {
  return new Promise((resolve, reject) => {
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

function finished(transaction) {
  return new Promise((resolve, reject) => {
    transaction.oncomplete = () => resolve();
    transaction.onerror = () => reject(transaction.error);
    transaction.onabort = () => reject(transaction.error || new Error('storage write aborted'));
  });
}

export async function openStore() {
  const request = indexedDB.open(DB_NAME, DB_VERSION);
  request.onupgradeneeded = () => {
    const db = request.result;
    if (!db.objectStoreNames.contains('meta')) db.createObjectStore('meta');
    if (!db.objectStoreNames.contains('devices')) db.createObjectStore('devices', { keyPath: 'device_id' });
    if (!db.objectStoreNames.contains('allowances')) db.createObjectStore('allowances', { keyPath: 'allowance_id' });
    if (!db.objectStoreNames.contains('allowance_requests')) db.createObjectStore('allowance_requests', { keyPath: 'idempotencyKey' });
  };
  const db = await promised(request);
  // A newer page (another tab, after an update) asks to upgrade: let it rather than block it.
  db.onversionchange = () => db.close();
  return new Store(db);
}

export class Store {
  constructor(db) { this.db = db; }

  // 'strict' asks the browser to flush to disk before the write counts as done: a counter
  // must be on disk before its code is on screen.
  tx(names, mode) { return this.db.transaction(names, mode, { durability: 'strict' }); }

  async meta() {
    return (await promised(this.tx(['meta'], 'readonly').objectStore('meta').get(META_KEY))) || null;
  }

  async saveMeta(meta) {
    const tx = this.tx(['meta'], 'readwrite');
    tx.objectStore('meta').put(meta, META_KEY);
    await finished(tx);
  }

  async updateMeta(change) {
    const tx = this.tx(['meta'], 'readwrite');
    const store = tx.objectStore('meta');
    const meta = (await promised(store.get(META_KEY))) || {};
    const next = change(meta) || meta;
    store.put(next, META_KEY);
    await finished(tx);
    return next;
  }

  async devices() {
    return promised(this.tx(['devices'], 'readonly').objectStore('devices').getAll());
  }

  /** A new device and the meta list naming it, in one transaction. */
  async addDevice(record, metaChange) {
    const tx = this.tx(['devices', 'meta'], 'readwrite');
    tx.objectStore('devices').put(record);
    const metaStore = tx.objectStore('meta');
    const meta = (await promised(metaStore.get(META_KEY))) || {};
    const next = metaChange(meta) || meta;
    next.deviceIds = [...new Set([...(next.deviceIds || []), record.device_id])];
    metaStore.put(next, META_KEY);
    await finished(tx);
    return next;
  }

  /** Change one stored device record in one transaction (false when it is gone). */
  async updateDevice(deviceId, change) {
    const tx = this.tx(['devices'], 'readwrite');
    const store = tx.objectStore('devices');
    const record = await promised(store.get(deviceId));
    if (!record) {
      tx.abort();
      return false;
    }
    change(record);
    store.put(record);
    await finished(tx);
    return true;
  }

  async removeDevices(deviceIds) {
    const tx = this.tx(['devices', 'meta'], 'readwrite');
    for (const id of deviceIds) tx.objectStore('devices').delete(id);
    const metaStore = tx.objectStore('meta');
    const meta = (await promised(metaStore.get(META_KEY))) || {};
    meta.deviceIds = (meta.deviceIds || []).filter((id) => !deviceIds.includes(id));
    metaStore.put(meta, META_KEY);
    await finished(tx);
  }

  /** Read the device's counters, let `claim` pick one, write it back: one transaction. */
  async claim(deviceId, claim) {
    const tx = this.tx(['devices'], 'readwrite');
    const store = tx.objectStore('devices');
    const record = await promised(store.get(deviceId));
    if (!record || !validCounterState(record.counterState)) {
      tx.abort();
      const error = new Error('this device\'s stored counters are missing');
      error.code = 'storage_lost';
      throw error;
    }
    const { counter, state } = claim(record.counterState);
    record.counterState = state;
    store.put(record);
    await finished(tx);
    return { counter, record };
  }

  async clear() {
    const names = ['devices', 'meta', 'allowances', 'allowance_requests'];
    const tx = this.tx(names, 'readwrite');
    for (const name of names) tx.objectStore(name).clear();
    await finished(tx);
  }

  async allowances() {
    return promised(this.tx(['allowances'], 'readonly').objectStore('allowances').getAll());
  }

  /** The allowance request sent but not answered yet, or null (at most one is kept). */
  async pendingAllowanceRequest() {
    const all = await promised(this.tx(['allowance_requests'], 'readonly').objectStore('allowance_requests').getAll());
    return all[0] ?? null;
  }

  async saveAllowanceRequest(request) {
    const tx = this.tx(['allowance_requests'], 'readwrite');
    tx.objectStore('allowance_requests').clear();
    tx.objectStore('allowance_requests').put(request);
    await finished(tx);
  }

  async dropAllowanceRequest(idempotencyKey) {
    const tx = this.tx(['allowance_requests'], 'readwrite');
    tx.objectStore('allowance_requests').delete(idempotencyKey);
    await finished(tx);
  }

  /** The answered allowance in, its request out: one transaction. */
  async saveAllowance(record, idempotencyKey) {
    const tx = this.tx(['allowances', 'allowance_requests'], 'readwrite');
    tx.objectStore('allowances').put(record);
    tx.objectStore('allowance_requests').delete(idempotencyKey);
    await finished(tx);
  }

  /** Read the allowance, let `choose` (offlineAllowance.chooseCertificate) pick the next
   * certificate, write its counter and reservation back: one transaction, before any code. */
  async claimOffline(allowanceId, choose) {
    const tx = this.tx(['allowances'], 'readwrite');
    const store = tx.objectStore('allowances');
    const record = await promised(store.get(allowanceId));
    let choice;
    try {
      if (!record) throw Object.assign(new Error('the offline allowance is gone'), { code: 'storage_lost' });
      choice = choose(record);
    } catch (error) {
      tx.abort();
      throw error;
    }
    store.put(choice.allowance);
    await finished(tx);
    return choice;
  }

  /** Replace one stored allowance by `change(record)`: one transaction (false when it is
   * gone). A hand-back's keys are deleted this way before the hand-back is sent. */
  async updateAllowance(allowanceId, change) {
    const tx = this.tx(['allowances'], 'readwrite');
    const store = tx.objectStore('allowances');
    const record = await promised(store.get(allowanceId));
    if (!record) {
      tx.abort();
      return false;
    }
    store.put(change(record));
    await finished(tx);
    return true;
  }

  /** Delete every allowance `drop(record)` is true for (their keys with them). */
  async removeAllowances(drop) {
    const tx = this.tx(['allowances'], 'readwrite');
    const store = tx.objectStore('allowances');
    const records = await promised(store.getAll());
    const gone = records.filter(drop).map((record) => record.allowance_id);
    for (const id of gone) store.delete(id);
    await finished(tx);
    return gone;
  }
}

const KEY_FIELDS = { v1: ['deviceKey', 'apiKey', 'hidingKey'], v2: ['deviceKey', 'apiKey', 'hidingKey'], v3: ['signingKey'] };

/** What is usable and what was lost: devices the meta names but storage no longer holds
 * whole (record gone, a key gone, counters unreadable). */
export function audit(meta, records) {
  const byId = new Map(records.map((record) => [record.device_id, record]));
  const usable = [];
  const lost = [];
  for (const id of meta?.deviceIds || []) {
    const record = byId.get(id);
    const keys = record && KEY_FIELDS[record.version];
    const whole = keys && keys.every((name) => record.keys && record.keys[name] instanceof CryptoKey)
      && validCounterState(record.counterState);
    if (whole) usable.push(record);
    else lost.push({ device_id: id, version: record?.version || meta.versions?.[id] || '?' });
  }
  return { usable, lost };
}
