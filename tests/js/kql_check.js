// Parse and analyse KQL with Microsoft's Kusto language service (npm @kusto/language-service-next).
// Input (stdin): {"tables": {"Name": [["Col", "type"], ...]}, "queries": ["...", ...]}
// Output (stdout): a JSON array, per query, of diagnostics {code, message, severity, start, length}.
"use strict";
const path = require("path");
const base = path.join(__dirname, "..", "..", "node_modules", "@kusto", "language-service-next");
global.Bridge = require(path.join(base, "bridge.js"));
require(path.join(base, "Kusto.Language.Bridge.js"));
const K = global.Kusto.Language;

const input = JSON.parse(require("fs").readFileSync(0, "utf8"));
const tables = Object.entries(input.tables).map(([name, cols]) =>
  new K.Symbols.TableSymbol.$ctor7(name, "(" + cols.map(([c, t]) => `${c}:${t}`).join(", ") + ")", null));
const db = new K.Symbols.DatabaseSymbol.ctor("Sentinel", tables);
const globals = K.GlobalState.Default.WithDatabase(db);

const out = input.queries.map((text) => {
  const code = K.KustoCode.ParseAndAnalyze(text, globals);
  const diagnostics = code.GetDiagnostics();
  const list = [];
  for (let i = 0; i < diagnostics.Count; i++) {
    const d = diagnostics.getItem(i);
    list.push({ code: d.Code, message: d.Message, severity: String(d.Severity), start: d.Start, length: d.Length });
  }
  return list;
});
process.stdout.write(JSON.stringify(out));
