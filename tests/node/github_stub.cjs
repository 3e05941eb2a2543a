// Runs a workflow's actions/github-script `script:` body as github-script@v7 does, against an in-memory
// stand-in for the GitHub REST client (issue comments only), so tests/deploy/test_workflows.py runs the real step.
//   node github_stub.cjs STATE.json SCRIPT.js   (cwd: the checkout; the step's env in the environment)
// STATE.json: {"repo": {"owner", "repo"}, "issue_number", "comments": [{id, issue_number, user, body}],
// "next_id"}; written back with the comments after the run and the "calls" the script made.
const fs = require('fs');
const path = require('path');

const [statePath, scriptPath] = process.argv.slice(2);
const state = JSON.parse(fs.readFileSync(statePath, 'utf8'));
state.calls = [];
const PER_PAGE = 2; // small pages: a script that reads only the first page misses comments
const BOT = { login: 'github-actions[bot]', type: 'Bot' }; // who GITHUB_TOKEN comments as

function expect(params, ...keys) {
  for (const key of keys) {
    if (params[key] === undefined) throw new Error(`missing parameter ${key}`);
  }
  if (params.owner !== state.repo.owner || params.repo !== state.repo.repo) {
    throw new Error(`404: no repository ${params.owner}/${params.repo}`);
  }
}

const issues = {
  async listComments(params) {
    expect(params, 'owner', 'repo', 'issue_number');
    const page = params.page || 1;
    const perPage = params.per_page || 30;
    const all = state.comments.filter(c => c.issue_number === params.issue_number);
    state.calls.push({ method: 'listComments', issue_number: params.issue_number, page });
    return { data: all.slice((page - 1) * perPage, page * perPage).map(c => ({ ...c, user: { ...c.user } })) };
  },
  async updateComment(params) {
    expect(params, 'owner', 'repo', 'comment_id', 'body');
    const comment = state.comments.find(c => c.id === params.comment_id);
    if (!comment) throw new Error(`404: no comment ${params.comment_id}`);
    comment.body = params.body;
    state.calls.push({ method: 'updateComment', comment_id: params.comment_id });
    return { data: comment };
  },
  async createComment(params) {
    expect(params, 'owner', 'repo', 'issue_number', 'body');
    const comment = { id: state.next_id++, issue_number: params.issue_number, user: BOT, body: params.body };
    state.comments.push(comment);
    state.calls.push({ method: 'createComment', issue_number: params.issue_number, id: comment.id });
    return { data: comment };
  },
};

const github = {
  rest: { issues },
  // Octokit's paginate: every page of a list endpoint, concatenated.
  async paginate(method, params) {
    const all = [];
    for (let page = 1; ; page += 1) {
      const { data } = await method({ ...params, per_page: PER_PAGE, page });
      all.push(...data);
      if (data.length < PER_PAGE) return all;
    }
  },
};

const context = {
  repo: { ...state.repo },
  issue: { ...state.repo, number: state.issue_number },
  eventName: 'pull_request',
  payload: { pull_request: { number: state.issue_number } },
};
const core = { info: console.log, warning: console.warn, setFailed: m => { throw new Error(m); } };

// github-script's require resolves relative module ids against the working directory (the checkout).
const wrappedRequire = id => require(id.startsWith('.') ? path.resolve(id) : id);

const AsyncFunction = Object.getPrototypeOf(async () => {}).constructor;
const step = new AsyncFunction('require', 'github', 'context', 'core', fs.readFileSync(scriptPath, 'utf8'));

step(wrappedRequire, github, context, core)
  .then(() => fs.writeFileSync(statePath, JSON.stringify(state, null, 2)))
  .catch(err => { console.error(err); process.exit(1); });
