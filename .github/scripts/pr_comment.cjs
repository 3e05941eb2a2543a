// The "Comment on the pull request" step of ci.yml (actions/github-script): post report/report.md on the
// pull request, updating the comment this workflow posted before (the bot's, carrying the marker) instead of
// adding another. ci.yml's `if:` keeps it to same-repository pull requests (a fork's token cannot comment).
// Tested with node against a stub of the GitHub client: tests/deploy/test_workflows.py, tests/node/github_stub.cjs.
const fs = require('fs');

const MARKER = '<!-- dvc-report -->'; // scripts/ci_report.py starts report.md with it

module.exports = async ({ github, context, reportPath = 'report/report.md', artifactUrl }) => {
  const body = fs.readFileSync(reportPath, 'utf8') +
    `\n[Plots (HTML, artifact dvc-report)](${artifactUrl})\n`;
  const { owner, repo } = context.repo;
  const issue_number = context.issue.number;
  const comments = await github.paginate(github.rest.issues.listComments, { owner, repo, issue_number });
  const mine = comments.find(c => c.user.type === 'Bot' && c.body.includes(MARKER));
  if (mine) {
    await github.rest.issues.updateComment({ owner, repo, comment_id: mine.id, body });
  } else {
    await github.rest.issues.createComment({ owner, repo, issue_number, body });
  }
};
