// The wallet's storage: one IndexedDB database on this origin. Device keys are CryptoKey
// objects stored as such (structured clone): the non-extractable ones can sign and encrypt but
// can never be read back out, not even by this page. A device's counters live in the same
// record as its keys, so they vanish together or not at all; `meta` lists the devices that
// should exist, so a record the browser lost is noticed rather than silently re-created.
import { validCounterState } from './counters.js';

const DB_NAME = 'paycode-wallet';
const DB_VERSION = 1;
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
  };
  return new Store(await promised(request));
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
    const tx = this.tx(['devices', 'meta'], 'readwrite');
    tx.objectStore('devices').clear();
    tx.objectStore('meta').clear();
    await finished(tx);
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
