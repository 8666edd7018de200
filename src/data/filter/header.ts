// The displayed size of a JPEG or PNG read from its header bytes, in JavaScript: asking sharp for metadata is a
// second trip through libvips per image that cost the filter ≈ 15 % of its throughput (`npm run bench -- filter`).
// Displayed means after the EXIF orientation, as sharp's `autoOrient` reports it. Anything this does not fully
// understand — another format, a PNG with EXIF, a malformed header — returns undefined, and the caller asks sharp.

export interface HeaderSize {
  width: number;
  height: number;
  format: 'jpeg' | 'png';
}

/** The oriented size of a JPEG or PNG from its header, or undefined when the bytes are anything else. */
export function headerSize(bytes: Uint8Array): HeaderSize | undefined {
  if (bytes.length >= 4 && bytes[0] === 0xff && bytes[1] === 0xd8) return jpegSize(bytes);
  if (bytes.length >= 8 && PNG_SIGNATURE.every((b, i) => bytes[i] === b)) return pngSize(bytes);
  return undefined;
}

const PNG_SIGNATURE = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];

const u16be = (b: Uint8Array, i: number) => (b[i] << 8) | b[i + 1];
const u32be = (b: Uint8Array, i: number) => ((b[i] << 24) >>> 0) + (b[i + 1] << 16) + (b[i + 2] << 8) + b[i + 3];

/** IHDR gives the size; an eXIf chunk (which could rotate it) before the image data sends the caller to sharp. */
function pngSize(b: Uint8Array): HeaderSize | undefined {
  let i = 8;
  let size: HeaderSize | undefined;
  while (i + 8 <= b.length) {
    const length = u32be(b, i);
    const type = String.fromCharCode(b[i + 4], b[i + 5], b[i + 6], b[i + 7]);
    if (type === 'IHDR') {
      if (i !== 8 || length < 8 || i + 16 > b.length) return undefined;
      size = { width: u32be(b, i + 8), height: u32be(b, i + 12), format: 'png' };
    } else if (type === 'eXIf') return undefined;
    else if (type === 'IDAT' || type === 'IEND') break;
    i += 12 + length; // length, type, data, CRC
  }
  return size && size.width > 0 && size.height > 0 ? size : undefined;
}

/** The frame header (SOFn) gives the size; an EXIF orientation of 5–8 (APP1) swaps width and height. */
function jpegSize(b: Uint8Array): HeaderSize | undefined {
  let i = 2;
  let orientation = 1;
  while (i + 4 <= b.length) {
    if (b[i] !== 0xff) return undefined;
    const marker = b[i + 1];
    if (marker === 0xff) {
      i++; // fill byte
      continue;
    }
    const length = u16be(b, i + 2);
    if (length < 2 || i + 2 + length > b.length) return undefined;
    // SOF0–SOF15, except DHT (C4), JPG (C8) and DAC (CC), which share the range.
    if (marker >= 0xc0 && marker <= 0xcf && marker !== 0xc4 && marker !== 0xc8 && marker !== 0xcc) {
      if (length < 7) return undefined;
      const height = u16be(b, i + 5);
      const width = u16be(b, i + 7);
      if (width === 0 || height === 0) return undefined; // height 0: given later by a DNL marker
      return orientation >= 5 ? { width: height, height: width, format: 'jpeg' } : { width, height, format: 'jpeg' };
    }
    if (marker === 0xe1) {
      const o = exifOrientation(b.subarray(i + 4, i + 2 + length));
      if (o === undefined) return undefined;
      orientation = o;
    }
    if (marker === 0xda || marker === 0xd9) return undefined; // scan data or the end before any frame header
    i += 2 + length;
  }
  return undefined;
}

/**
 * Orientation (tag 0x0112) of an APP1 segment's payload: 1 when it is not EXIF (XMP also lives in APP1) or has
 * no orientation, undefined when it is EXIF but cannot be read (the caller then asks sharp).
 */
function exifOrientation(p: Uint8Array): number | undefined {
  if (p.length < 6 || String.fromCharCode(...p.subarray(0, 6)) !== 'Exif\0\0') return 1;
  const t = p.subarray(6);
  if (t.length < 8) return undefined;
  const little = t[0] === 0x49 && t[1] === 0x49;
  if (!little && !(t[0] === 0x4d && t[1] === 0x4d)) return undefined;
  const u16 = (i: number) => (little ? t[i] | (t[i + 1] << 8) : (t[i] << 8) | t[i + 1]);
  const u32 = (i: number) => (little ? (t[i] | (t[i + 1] << 8) | (t[i + 2] << 16)) + t[i + 3] * 2 ** 24 : t[i] * 2 ** 24 + ((t[i + 1] << 16) | (t[i + 2] << 8) | t[i + 3]));
  const ifd = u32(4);
  if (ifd + 2 > t.length) return undefined;
  const entries = u16(ifd);
  if (ifd + 2 + 12 * entries > t.length) return undefined;
  for (let e = 0; e < entries; e++) {
    const at = ifd + 2 + 12 * e;
    if (u16(at) !== 0x0112) continue;
    const value = u16(at + 8); // SHORT, stored left-justified in the 4-byte value field
    return value >= 1 && value <= 8 ? value : undefined;
  }
  return 1;
}
