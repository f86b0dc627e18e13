"""Running ``run_monitor.py`` as a subprocess, the way a supervisor does."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


class DaemonProcess:
    def __init__(
        self,
        env: dict[str, str],
        *,
        command: str = "run",
        processor: str | None = None,
        log_file: Path,
        interpreter_args: list[str] | None = None,
    ) -> None:
        # ``interpreter_args`` go between the interpreter and the script: the bench's profiler
        # (``-m memray run ...``) wraps the daemon that way.
        args = [
            sys.executable,
            *(interpreter_args or []),
            str(REPO / "run_monitor.py"),
            "--env-file",
            os.devnull,
            command,
        ]
        if processor:
            args += ["--processor", processor]
        self.env = env
        self.log_file = log_file
        self._log = log_file.open("ab")
        full_env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("GOOGLE_", "GEMINI_", "SUPABASE_"))
        }
        full_env.update({"LOG_FORMAT": "json", "PYTHONUNBUFFERED": "1"}, **env)
        self.process = subprocess.Popen(
            args, cwd=REPO, env=full_env, stdout=self._log, stderr=subprocess.STDOUT
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def logs(self) -> str:
        return self.log_file.read_text(errors="replace")

    def terminate(self, timeout: float = 30) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.wait(timeout)

    async def terminate_beside_fakes(self, timeout: float = 30) -> int:
        """``terminate`` for an async test whose fakes (Gemini, Storage) run in its own event
        loop: the wait runs in a thread, so they keep answering while the daemon shuts down. A
        blocking wait there stalls every request the daemon still has in flight until its
        shutdown grace runs out, and the wait times out."""
        return await asyncio.to_thread(self.terminate, timeout)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()

    def wait(self, timeout: float = 30) -> int:
        try:
            return self.process.wait(timeout)
        finally:
            self._log.close()

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        if self.alive():
            self.kill()
        self._log.close()
