// How the bot finds things on a meeting page: the one matcher for every entry of a platform's
// data file (bot/browser/platforms/*.toml). It is both Playwright's "probe" selector engine
// (what the bot clicks and types into) and, inside capture.js, what the page's states and
// participant tiles are read with, so a data file entry means the same thing everywhere.
//
// A probe is one of:
//   css:SELECTOR               elements matching a CSS selector (a list "a, b" is allowed)
//   css:SELECTOR text:WORDS    ...whose visible text contains WORDS
//   css:SELECTOR label:WORDS   ...whose accessible label (aria-label, else title) contains WORDS
//   text:WORDS                 the page's visible text contains WORDS (page states only)
// WORDS are compared by meaning, not by character: case, typographic apostrophes and quotes,
// and runs of whitespace don't matter, and a label may carry more (Meet appends keyboard
// shortcuts: "Turn off microphone (ctrl + d)").
//
// This file is one JavaScript expression, as Playwright's selectors.register() wants it.
(() => {
  const SAME = [
    [/[\u2018\u2019\u201A\u201B\u2032\u02BC]/g, "'"],
    [/[\u201C\u201D\u201E\u201F\u2033]/g, '"'],
    [/[\s\u00A0\u202F\u2007]+/g, " "],
  ];

  function normalise(words) {
    let text = String(words || "").normalize("NFKC").toLowerCase();
    for (const [pattern, replacement] of SAME) text = text.replace(pattern, replacement);
    return text.trim();
  }

  function parse(probe) {
    if (probe.startsWith("text:")) return { css: null, text: normalise(probe.slice(5)) };
    const found = /^css:(.*?)(?:\s+(text|label):(.*))?$/s.exec(probe);
    if (!found) throw new Error(`not a probe: ${probe}`);
    const [, css, filter, words] = found;
    return { css: css.trim(), filter: filter || null, words: normalise(words) };
  }

  function label(element) {
    return element.getAttribute("aria-label") || element.getAttribute("title") || "";
  }

  function visibleText(element) {
    return element.innerText || element.value || element.textContent || "";
  }

  function accepts(parsed, element) {
    if (parsed.filter === "text") return normalise(visibleText(element)).includes(parsed.words);
    if (parsed.filter === "label") return normalise(label(element)).includes(parsed.words);
    return true;
  }

  function queryAll(root, probe) {
    const parsed = parse(probe);
    if (parsed.css === null) return [];
    const candidates = [...root.querySelectorAll(parsed.css)];
    if (root.matches && root.matches(parsed.css)) candidates.unshift(root);
    return candidates.filter((element) => accepts(parsed, element));
  }

  function shown(element) {
    return element.checkVisibility ? element.checkVisibility({ visibilityProperty: true }) : element.getClientRects().length > 0;
  }

  return {
    normalise,
    queryAll,
    query: (root, probe) => queryAll(root, probe)[0] || null,
    // Whether the probe finds something shown on the page (text: in the page's visible text).
    onPage(probe, doc) {
      const parsed = parse(probe);
      const body = doc.body || doc.documentElement;
      if (parsed.css === null) return normalise(body.innerText).includes(parsed.text);
      return queryAll(doc, probe).some(shown);
    },
  };
})()
