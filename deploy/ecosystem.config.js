// PM2: `pm2 start deploy/ecosystem.config.js` (from anywhere; paths are resolved from this file).
// It runs the checkout's run_monitor.py with the .venv that `make install` creates; the daemon
// reads .env from the repository root. For an installed package, set `script` to the path of
// `book-monitor` and keep `interpreter: "none"`.
const path = require("path");

const root = path.resolve(__dirname, "..");

module.exports = {
  apps: [
    {
      name: "book-monitor",
      script: path.join(root, "run_monitor.py"),
      args: ["run"],
      interpreter: path.join(root, ".venv", "bin", "python"),
      cwd: root,
      exec_mode: "fork",
      instances: 1,
      autorestart: true,
      // PM2 stops an app with SIGINT (the daemon drains on it like on SIGTERM), then SIGKILL after
      // kill_timeout, 1600 ms by default (pm2.keymetrics.io/docs/usage/signals-clean-restart/ and
      // lib/API/schema.json). That would cut the drain: kill_timeout must exceed
      // SHUTDOWN_GRACE_SECONDS (30 s by default). Raise both together.
      kill_timeout: 45000,
      env: {
        LOG_FORMAT: "json",
        PYTHONUNBUFFERED: "1",
      },
    },
  ],
};
