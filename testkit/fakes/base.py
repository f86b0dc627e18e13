"""What every fake service has in common: an aiohttp app on an ephemeral 127.0.0.1 port."""

from __future__ import annotations

from typing import Self

from aiohttp import web


class LocalServer:
    """Start and stop a fake with the test: ``async with Fake(...) as fake: ... fake.url``."""

    url: str = ""
    _runner: web.AppRunner | None = None

    def build_app(self) -> web.Application:
        raise NotImplementedError

    async def start(self) -> None:
        self._runner = web.AppRunner(self.build_app(), access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()
