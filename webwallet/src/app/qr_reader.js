// Reading a QR code from a camera frame or a photo: the browser's own BarcodeDetector where it
// has one, ZXing (zxing-wasm, maintained, the engine of the BarcodeDetector polyfill) otherwise.
// The WebAssembly file is served by our own server and kept by the service worker; it is never
// fetched from anywhere else (zxing-wasm's default is a CDN, so the location is overridden).
import { prepareZXingModule, readBarcodes } from 'zxing-wasm/reader';

export const WASM_FILE = 'zxing_reader.wasm';
const FRAME_PX_MAX = 1600;

let prepared = false;

function prepareOnce() {
  if (prepared) return;
  prepared = true;
  const wasmUrl = new URL(WASM_FILE, document.baseURI).href;
  prepareZXingModule({ overrides: { locateFile: (path, prefix) => (path.endsWith('.wasm') ? wasmUrl : prefix + path) } });
}

async function nativeDetector() {
  if (!('BarcodeDetector' in globalThis)) return null;
  try {
    const formats = await globalThis.BarcodeDetector.getSupportedFormats();
    return formats.includes('qr_code') ? new globalThis.BarcodeDetector({ formats: ['qr_code'] }) : null;
  } catch {
    return null;
  }
}

export class QrReader {
  static async open() {
    return new QrReader(await nativeDetector());
  }

  constructor(detector) {
    this.detector = detector;
  }

  /** The first QR's text in a video element or an image bitmap, or null. */
  async read(source) {
    if (this.detector) {
      try {
        const found = await this.detector.detect(source);
        if (found.length) return found[0].rawValue;
      } catch { /* fall through to ZXing */ }
    }
    const image = pixels(source);
    if (!image) return null;
    prepareOnce();
    const found = await readBarcodes(image, { formats: ['QRCode'], maxNumberOfSymbols: 1, tryHarder: true });
    return found.length && found[0].isValid ? found[0].text : null;
  }
}

function pixels(source) {
  const width = source.videoWidth || source.width;
  const height = source.videoHeight || source.height;
  if (!width || !height) return null;
  const scale = Math.min(1, FRAME_PX_MAX / Math.max(width, height));
  const canvas = document.createElement('canvas');
  canvas.width = Math.round(width * scale);
  canvas.height = Math.round(height * scale);
  const context = canvas.getContext('2d', { willReadFrequently: true });
  context.drawImage(source, 0, 0, canvas.width, canvas.height);
  return context.getImageData(0, 0, canvas.width, canvas.height);
}
