// Language identification for caption filtering: ELD's answer, confirmed by fastText lid.176 or CLD3. Chosen by
// measurement on real short texts in 30 languages (docs/language-id.md, `npm run bench -- langid`): for "is it
// English?" CLD3 misses a fifth of English, fastText lid.176 lets through too many close languages, ELD alone sits
// right at the precision bar (0.99); a second detector's confirmation buys the margin.
// All three models ship inside their npm packages, so detection works offline.
import { getLIDModel } from 'fasttext.wasm.js';
import { loadModule } from 'cld3-asm';

export interface LanguageDetector {
  /** Most likely language of `text` as an ISO 639-1 code ('en'), or 'und' when undetermined. */
  detect(text: string): { lang: string; confidence: number };
  /** Whether `text` is in language `lang` (ISO 639-1). */
  is(text: string, lang: string): boolean;
}

/** Text with no letters at all (empty, digits, emoji, punctuation), or whose language no second detector confirms. */
export const UNDETERMINED = 'und';

/** The decision rule this module implements, by the name bench/langid.ts measures it under. */
export const DETECTION_RULE = 'ELD = en and (fastText p(en) ≥ t or CLD3 = en)';

/** fastText confirms ELD's answer when it gives that language at least this probability (picked on the tune half). */
export const FASTTEXT_CONFIRMS = 0.05;

/** Old or alternative codes some detectors use → the ISO 639-1 code the others use. */
const CANONICAL: Record<string, string> = { iw: 'he', in: 'id', ji: 'yi', jw: 'jv', nb: 'no' };
const canonical = (code: string) => CANONICAL[code.toLowerCase()] ?? code.toLowerCase();

interface FastTextPrediction {
  size(): number;
  get(i: number): [number, string];
  delete?(): void;
}
interface FastTextModel {
  predict(text: string, k: number, threshold: number): FastTextPrediction;
}
interface Cld3Identifier {
  findLanguage(text: string): { language: string; probability: number };
}

/**
 * ELD names the language; fastText lid.176 (giving it probability ≥ FASTTEXT_CONFIRMS) or, failing that, CLD3 (naming
 * it first) must confirm it. The confidence is the probability the confirming model gave. Unconfirmed → 'und'.
 * `is` stops after ELD when ELD names another language, so the common case of filtering (a caption that is clearly
 * not English) costs one detector.
 */
export class ConfirmedDetector implements LanguageDetector {
  constructor(
    private readonly fastText: FastTextModel,
    private readonly cld3: Cld3Identifier,
    private readonly eldDetect: (text: string) => { language: string },
  ) {}

  detect(text: string): { lang: string; confidence: number } {
    const line = text.replace(/\s+/gu, ' ').trim(); // fastText reads one line: a newline would cut the text short
    if (!/\p{L}/u.test(line)) return { lang: UNDETERMINED, confidence: 0 };
    const lang = canonical(this.eldDetect(line).language || UNDETERMINED);
    if (lang === UNDETERMINED) return { lang, confidence: 0 };
    return this.confirm(line, lang);
  }

  is(text: string, lang: string): boolean {
    const line = text.replace(/\s+/gu, ' ').trim();
    if (!/\p{L}/u.test(line) || canonical(this.eldDetect(line).language) !== canonical(lang)) return false;
    return this.confirm(line, canonical(lang)).lang !== UNDETERMINED;
  }

  private confirm(line: string, lang: string): { lang: string; confidence: number } {
    const p = this.fastTextProbability(line, lang);
    if (p >= FASTTEXT_CONFIRMS) return { lang, confidence: p };
    const r = this.cld3.findLanguage(line);
    if (canonical(String(r.language)) === lang) return { lang, confidence: r.probability };
    return { lang: UNDETERMINED, confidence: 0 };
  }

  /** fastText's probability for `lang` (0 when below FASTTEXT_CONFIRMS: only those labels are returned). */
  private fastTextProbability(line: string, lang: string): number {
    const v = this.fastText.predict(line, -1, FASTTEXT_CONFIRMS);
    try {
      for (let i = 0; i < v.size(); i++) {
        const [p, label] = v.get(i);
        if (canonical(label.replace('__label__', '')) === lang) return p;
      }
      return 0;
    } finally {
      v.delete?.(); // embind vectors live on the wasm heap until deleted
    }
  }
}

let loading: Promise<LanguageDetector> | undefined;

/** Loads the three models once per process (seconds and ≈0.4 GB, mostly ELD's n-gram table); later calls share them. */
export function loadLanguageDetector(): Promise<LanguageDetector> {
  loading ??= (async () => {
    const loadFastText = async () => (await getLIDModel()).load();
    // eld/large is a 4.5 MB n-gram table: imported here, not at the top, so importing this module stays cheap.
    const [model, cldFactory, { eld }] = await Promise.all([loadFastText(), loadModule(), import('eld/large')]);
    // CLD3's defaults skip texts under 140 bytes: captions are shorter, so it must look at every byte.
    const cld3 = cldFactory.create(0, 1000);
    return new ConfirmedDetector(model as unknown as FastTextModel, cld3, (t) => eld.detect(t));
  })();
  loading.catch(() => (loading = undefined)); // a failed load may be retried
  return loading;
}
