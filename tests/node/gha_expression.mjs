// Evaluates GitHub Actions expressions with GitHub's own evaluator (@actions/expressions, the library of
// GitHub's workflow language services), for tests/deploy/test_workflows.py.
//   node gha_expression.mjs NODE_MODULES < {"expressions": [...], "contexts": {"github": {...}, ...}}
// Prints the results as a JSON list. An `if:` is evaluated as written (no implicit `success() &&`).
import fs from 'fs';
import path from 'path';
import { pathToFileURL } from 'url';

const root = path.join(process.argv[2], '@actions/expressions/dist');
const { Evaluator, Lexer, Parser, data } = await import(pathToFileURL(path.join(root, 'index.js')).href);

const { expressions, contexts } = JSON.parse(fs.readFileSync(0, 'utf8'));
const contextData = JSON.parse(JSON.stringify(contexts), data.reviver);
const results = expressions.map(text => {
  const expression = text.trim().replace(/^\$\{\{([\s\S]*)\}\}$/, '$1');
  const lexed = new Lexer(expression).lex();
  const parsed = new Parser(lexed.tokens, Object.keys(contexts), []).parse();
  return JSON.parse(JSON.stringify(new Evaluator(parsed, contextData).evaluate(), data.replacer));
});
console.log(JSON.stringify(results));
