// Parse, validate and render Adaptive Cards with Microsoft's official library (adaptivecards 3.x) under jsdom.
// Input (stdin): a JSON array of cards. Output (stdout): a JSON array, one report per card:
// {events: [...], failures: [...], dropped: [...], html: "..."}.
//  - events:   what card.parse() reported (unknown element types, bad values)
//  - failures: what card.validateProperties() reported (required properties, versions)
//  - dropped:  property paths present in the input but absent after a parse/toJSON round trip,
//              i.e. properties the library did not recognise
"use strict";
const path = require("path");
const { JSDOM } = require("jsdom");
const dom = new JSDOM("<!DOCTYPE html><html><body></body></html>");
for (const key of Object.getOwnPropertyNames(dom.window)) {
  if (!(key in global)) {
    try { global[key] = dom.window[key]; } catch (e) { /* read-only globals */ }
  }
}
global.window = dom.window;
global.document = dom.window.document;
const AC = require(path.join(__dirname, "..", "..", "node_modules", "adaptivecards", "dist", "adaptivecards.js"));

function dropped(input, output, prefix) {
  const out = [];
  if (Array.isArray(input)) {
    input.forEach((item, i) => out.push(...dropped(item, Array.isArray(output) ? output[i] : undefined, `${prefix}[${i}]`)));
  } else if (input && typeof input === "object") {
    for (const key of Object.keys(input)) {
      if (key === "$schema") continue;
      const here = `${prefix}.${key}`;
      if (!output || typeof output !== "object" || !(key in output)) out.push(here);
      else out.push(...dropped(input[key], output[key], here));
    }
  }
  return out;
}

const cards = JSON.parse(require("fs").readFileSync(0, "utf8"));
const reports = cards.map((json) => {
  const card = new AC.AdaptiveCard();
  const ctx = new AC.SerializationContext();
  card.parse(json, ctx);
  const events = [];
  for (let i = 0; i < ctx.eventCount; i++) {
    const e = ctx.getEventAt(i);
    events.push(`${e.event}: ${e.message}`);
  }
  const validation = card.validateProperties();
  const failures = [];
  for (const e of validation.validationEvents) failures.push(`${e.event}: ${e.message}`);
  const html = card.render().outerHTML;
  return { events, failures, dropped: dropped(json, card.toJSON(), "$"), html };
});
process.stdout.write(JSON.stringify(reports));
