"""The async SDK over the same persistence features: pause, connect, snapshots, forks, network updates."""

from __future__ import annotations

from e2b import AsyncSandbox, SandboxState


async def test_async_pause_resume_snapshot_fork(e2b_server) -> None:
    sandbox = await AsyncSandbox.create(lifecycle={"on_timeout": "pause", "auto_resume": True})
    created: list[AsyncSandbox] = []
    snapshot_id = None
    try:
        await sandbox.files.write("/home/user/state.txt", "async")
        sleeper = await sandbox.commands.run("sleep 600", background=True)
        assert (await sandbox.get_info()).lifecycle == {"on_timeout": "pause", "auto_resume": True}
        assert await sandbox.pause() is True
        assert await sandbox.pause() is False
        assert (await AsyncSandbox.get_info(sandbox.sandbox_id)).state == SandboxState.PAUSED
        resumed = await AsyncSandbox.connect(sandbox.sandbox_id)
        assert sleeper.pid in [p.pid for p in await resumed.commands.list()]  # processes kept running

        await resumed.pause(mode="filesystem")
        rebooted = await AsyncSandbox.connect(sandbox.sandbox_id)
        assert await rebooted.files.read("/home/user/state.txt") == "async"
        assert await rebooted.commands.list() == []

        snapshot = await rebooted.create_snapshot()
        snapshot_id = snapshot.snapshot_id
        clone = await AsyncSandbox.create(snapshot_id)
        created.append(clone)
        assert await clone.files.read("/home/user/state.txt") == "async"
        paginator = AsyncSandbox.list_snapshots(sandbox_id=sandbox.sandbox_id)
        assert [s.snapshot_id for s in await paginator.next_items()] == [snapshot_id]

        forks = await rebooted.fork(count=2)
        created.extend(f for f in forks if isinstance(f, AsyncSandbox))
        assert len(created) == 3
        for fork in created[1:]:
            assert await fork.files.read("/home/user/state.txt") == "async"

        await rebooted.update_network({"allow_internet_access": False})
        assert (await rebooted.get_info()).allow_internet_access is False
    finally:
        for other in created:
            await other.kill()
        assert await sandbox.kill() is True
        if snapshot_id:
            assert await AsyncSandbox.delete_snapshot(snapshot_id) is True
            assert await AsyncSandbox.delete_snapshot(snapshot_id) is False
