// Captions for a ShapeSpec: varied English templates for the training data, and real sentences in six other
// languages (grammatical gender and case included) for the samples the language filter must drop.
import type { Rng } from '../../util/rng.ts';
import type { Background, Color, Shape, ShapeSpec, SizeName } from './spec.ts';

/** Where the shape sits, in words ("top left", "center", "bottom"…), from the thirds of the canvas. */
export function positionWords(spec: ShapeSpec): string {
  const row = ['top', '', 'bottom'][Math.min(2, Math.floor((3 * spec.cy) / spec.height))];
  const col = ['left', '', 'right'][Math.min(2, Math.floor((3 * spec.cx) / spec.width))];
  return [row, col].filter(Boolean).join(' ') || 'center';
}

type Template = (s: ShapeSpec) => string;

const ENGLISH: Template[] = [
  (s) => `a ${s.color} ${s.shape} on a ${s.background} background`,
  (s) => `${s.background} background with a ${s.size} ${s.color} ${s.shape}`,
  (s) => `a ${s.size} ${s.color} ${s.shape}`,
  (s) => `a ${s.color} ${s.shape} in the ${positionWords(s)} of a ${s.background} image`,
  (s) => `an image of a ${s.color} ${s.shape} on ${s.background}`,
  (s) => `${s.color} ${s.shape}, ${s.background} background`,
  (s) => `a ${s.size} ${s.color} ${s.shape} against a plain ${s.background} backdrop`,
  (s) => `a simple drawing of a ${s.color} ${s.shape}`,
  (s) => `there is a ${s.size} ${s.color} ${s.shape} on a ${s.background} background`,
  (s) => `a ${s.background} picture with a ${s.color} ${s.shape} near the ${positionWords(s)}`,
];

/** The i-th English template, for callers that want a fixed wording (e.g. eval prompts). */
export function englishCaption(spec: ShapeSpec, template = 0): string {
  return ENGLISH[template % ENGLISH.length](spec);
}

export const ENGLISH_TEMPLATE_COUNT = ENGLISH.length;

// German: masculine Kreis, neuter Quadrat/Dreieck; adjectives inflect by gender and case.
const DE_SHAPE: Record<Shape, [string, 'm' | 'n']> = { circle: ['Kreis', 'm'], square: ['Quadrat', 'n'], triangle: ['Dreieck', 'n'] };
const DE_COLOR: Record<Color, string> = { red: 'rot', green: 'grün', blue: 'blau', yellow: 'gelb' };
const DE_BG: Record<Background, string> = { white: 'weiß', black: 'schwarz', gray: 'grau' };
const DE_SIZE: Record<SizeName, string> = { small: 'klein', medium: 'mittelgroß', large: 'groß' };
const deNom = (s: ShapeSpec, adj: string) => adj + (DE_SHAPE[s.shape][1] === 'm' ? 'er' : 'es');

// French, Spanish, Italian, Portuguese: all three shapes are masculine nouns; colour follows the noun.
const FR_SHAPE: Record<Shape, string> = { circle: 'cercle', square: 'carré', triangle: 'triangle' };
const FR_COLOR: Record<Color, string> = { red: 'rouge', green: 'vert', blue: 'bleu', yellow: 'jaune' };
const FR_BG: Record<Background, string> = { white: 'blanc', black: 'noir', gray: 'gris' };
const frPhrase = (s: ShapeSpec) =>
  s.size === 'small' ? `un petit ${FR_SHAPE[s.shape]} ${FR_COLOR[s.color]}` : s.size === 'large' ? `un grand ${FR_SHAPE[s.shape]} ${FR_COLOR[s.color]}` : `un ${FR_SHAPE[s.shape]} ${FR_COLOR[s.color]} de taille moyenne`;

const ES_SHAPE: Record<Shape, string> = { circle: 'círculo', square: 'cuadrado', triangle: 'triángulo' };
const ES_COLOR: Record<Color, string> = { red: 'rojo', green: 'verde', blue: 'azul', yellow: 'amarillo' };
const ES_BG: Record<Background, string> = { white: 'blanco', black: 'negro', gray: 'gris' };
const ES_SIZE: Record<SizeName, string> = { small: 'pequeño', medium: 'mediano', large: 'grande' };

const IT_SHAPE: Record<Shape, string> = { circle: 'cerchio', square: 'quadrato', triangle: 'triangolo' };
const IT_COLOR: Record<Color, string> = { red: 'rosso', green: 'verde', blue: 'blu', yellow: 'giallo' };
const IT_BG: Record<Background, string> = { white: 'bianco', black: 'nero', gray: 'grigio' };
const itPhrase = (s: ShapeSpec) =>
  s.size === 'small' ? `un piccolo ${IT_SHAPE[s.shape]} ${IT_COLOR[s.color]}` : s.size === 'large' ? `un grande ${IT_SHAPE[s.shape]} ${IT_COLOR[s.color]}` : `un ${IT_SHAPE[s.shape]} ${IT_COLOR[s.color]} di medie dimensioni`;

const PT_SHAPE: Record<Shape, string> = { circle: 'círculo', square: 'quadrado', triangle: 'triângulo' };
const PT_COLOR: Record<Color, string> = { red: 'vermelho', green: 'verde', blue: 'azul', yellow: 'amarelo' };
const PT_BG: Record<Background, string> = { white: 'branco', black: 'preto', gray: 'cinzento' };
const PT_SIZE: Record<SizeName, string> = { small: 'pequeno', medium: 'médio', large: 'grande' };

// Dutch: de cirkel, het vierkant, de driehoek; after "een" an adjective takes -e only before a de-word.
const NL_SHAPE: Record<Shape, [string, 'de' | 'het']> = { circle: ['cirkel', 'de'], square: ['vierkant', 'het'], triangle: ['driehoek', 'de'] };
const NL_COLOR: Record<Color, [string, string]> = { red: ['rood', 'rode'], green: ['groen', 'groene'], blue: ['blauw', 'blauwe'], yellow: ['geel', 'gele'] };
const NL_BG: Record<Background, string> = { white: 'witte', black: 'zwarte', gray: 'grijze' };
const NL_SIZE: Record<SizeName, [string, string]> = { small: ['klein', 'kleine'], medium: ['middelgroot', 'middelgrote'], large: ['groot', 'grote'] };
const nl = (s: ShapeSpec, forms: [string, string]) => forms[NL_SHAPE[s.shape][1] === 'het' ? 0 : 1];

export const FOREIGN: Record<string, Template[]> = {
  de: [
    (s) => `Ein ${deNom(s, DE_SIZE[s.size])} ${deNom(s, DE_COLOR[s.color])} ${DE_SHAPE[s.shape][0]} auf ${DE_BG[s.background]}em Hintergrund`,
    (s) => `Ein ${DE_BG[s.background]}er Hintergrund mit einem ${DE_COLOR[s.color]}en ${DE_SHAPE[s.shape][0]} in der Mitte`,
    (s) => `Das Bild zeigt ${DE_SHAPE[s.shape][1] === 'm' ? 'einen' : 'ein'} ${DE_SHAPE[s.shape][1] === 'm' ? DE_COLOR[s.color] + 'en' : DE_COLOR[s.color] + 'es'} ${DE_SHAPE[s.shape][0]} vor einem ${DE_BG[s.background]}en Hintergrund`,
  ],
  fr: [
    (s) => `Un ${FR_SHAPE[s.shape]} ${FR_COLOR[s.color]} sur un fond ${FR_BG[s.background]}`,
    (s) => `Sur un fond ${FR_BG[s.background]}, on voit ${frPhrase(s)}`,
    (s) => `Une image qui montre ${frPhrase(s)} dessiné sur un fond ${FR_BG[s.background]}`,
  ],
  es: [
    (s) => `Un ${ES_SHAPE[s.shape]} ${ES_COLOR[s.color]} sobre un fondo ${ES_BG[s.background]}`,
    (s) => `Hay un ${ES_SHAPE[s.shape]} ${ES_COLOR[s.color]} ${ES_SIZE[s.size]} sobre el fondo ${ES_BG[s.background]}`,
    (s) => `Fondo ${ES_BG[s.background]} con un ${ES_SHAPE[s.shape]} de color ${ES_COLOR[s.color]}`,
  ],
  it: [
    (s) => `Un ${IT_SHAPE[s.shape]} ${IT_COLOR[s.color]} su uno sfondo ${IT_BG[s.background]}`,
    (s) => `L'immagine mostra ${itPhrase(s)} su uno sfondo ${IT_BG[s.background]}`,
  ],
  pt: [
    (s) => `Um ${PT_SHAPE[s.shape]} ${PT_COLOR[s.color]} sobre um fundo ${PT_BG[s.background]}`,
    (s) => `Uma imagem com um ${PT_SHAPE[s.shape]} ${PT_COLOR[s.color]} ${PT_SIZE[s.size]} num fundo ${PT_BG[s.background]}`,
  ],
  nl: [
    (s) => `Een ${nl(s, NL_COLOR[s.color])} ${NL_SHAPE[s.shape][0]} op een ${NL_BG[s.background]} achtergrond`,
    (s) => `Een ${NL_BG[s.background]} achtergrond met een ${nl(s, NL_SIZE[s.size])} ${nl(s, NL_COLOR[s.color])} ${NL_SHAPE[s.shape][0]}`,
  ],
};

export const FOREIGN_LANGUAGES = Object.keys(FOREIGN);

/** A random English caption; sometimes capitalised and closed with a full stop, as real captions vary. */
export function randomEnglishCaption(spec: ShapeSpec, rng: Rng): string {
  const text = ENGLISH[rng.int(ENGLISH.length)](spec);
  return rng.float() < 0.3 ? `${text[0].toUpperCase()}${text.slice(1)}.` : text;
}

/** A random caption in one of the foreign languages. */
export function randomForeignCaption(spec: ShapeSpec, rng: Rng): { lang: string; text: string } {
  const lang = FOREIGN_LANGUAGES[rng.int(FOREIGN_LANGUAGES.length)];
  const templates = FOREIGN[lang];
  return { lang, text: templates[rng.int(templates.length)](spec) };
}
