// Validate AsyncAPI documents with the reference parser (@asyncapi/parser): exit 1 and print
// the errors of any document it does not accept. Usage: node validate_asyncapi.js FILE...
const fs = require("fs");
const { Parser } = require("@asyncapi/parser");

(async () => {
  const parser = new Parser();
  let bad = 0;
  for (const file of process.argv.slice(2)) {
    const { document, diagnostics } = await parser.parse(fs.readFileSync(file, "utf8"));
    const errors = diagnostics.filter((d) => d.severity === 0);
    if (!document || errors.length) {
      bad += 1;
      console.log(`${file}: ${JSON.stringify(errors.map((e) => [e.path.join("."), e.message]))}`);
    } else {
      console.log(`${file}: valid`);
    }
  }
  process.exit(bad ? 1 : 0);
})();
