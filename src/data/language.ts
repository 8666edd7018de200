// Language identification for caption filtering. First version: fastText lid.176 (shipped inside the
// fasttext.wasm.js package, so it works offline). The rule is being refined by measurement; see docs/language-id.md.
import { getLIDModel } from 'fasttext.wasm.js';

export interface LanguageDetector {
  /** Most likely language of `text` as an ISO 639-1 code ('en'), or 'und' when the text holds no letters. */
  detect(text: string): { lang: string; confidence: number };
  /** Whether `text` is in language `lang` (ISO 639-1). */
  is(text: string, lang: string): boolean;
}

/** The language of text that holds no letters at all (empty, digits, emoji, punctuation). */
export const UNDETERMINED = 'und';

interface FastTextPrediction {
  size(): number;
  get(i: number): [number, string];
  delete?(): void;
}
interface FastTextModel {
  predict(text: string, k: number, threshold: number): FastTextPrediction;
}

/** Collapses whitespace: fastText reads one line, so a newline would cut the caption short. */
function normalise(text: string): string {
  return text.replace(/\s+/gu, ' ').trim();
}

class FastTextDetector implements LanguageDetector {
  constructor(private readonly model: FastTextModel) {}

  detect(text: string): { lang: string; confidence: number } {
    const line = normalise(text);
    if (!/\p{L}/u.test(line)) return { lang: UNDETERMINED, confidence: 0 };
    const v = this.model.predict(line, 1, 0);
    try {
      if (v.size() === 0) return { lang: UNDETERMINED, confidence: 0 };
      const [p, label] = v.get(0);
      return { lang: label.replace('__label__', ''), confidence: p };
    } finally {
      v.delete?.(); // embind vectors live on the wasm heap until deleted
    }
  }

  is(text: string, lang: string): boolean {
    return this.detect(text).lang === lang;
  }
}

let loading: Promise<LanguageDetector> | undefined;

/** Loads the model once per process; later calls share it. */
export function loadLanguageDetector(): Promise<LanguageDetector> {
  loading ??= (async () => {
    const lid = await getLIDModel();
    const model = (await lid.load()) as unknown as FastTextModel;
    return new FastTextDetector(model);
  })();
  return loading;
}
