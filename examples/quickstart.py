"""Save `hello -> world` in the sidecar's `statestore`, read it back, print it.

Start the sidecar first (`uv run layotto run`), then: `uv run python examples/quickstart.py`.
"""

import asyncio
import os

from grpclib.client import Channel
from layotto._proto.spec.proto.runtime import v1 as pb


async def main() -> None:
    port = int(os.environ.get("LAYOTTO_GRPC_PORT", "34904"))
    async with Channel("127.0.0.1", port) as channel:
        runtime = pb.RuntimeStub(channel)
        item = pb.StateItem(key="hello", value=b"world")
        await runtime.save_state(pb.SaveStateRequest(store_name="statestore", states=[item]))
        got = await runtime.get_state(pb.GetStateRequest(store_name="statestore", key="hello"))
        print(got.data.decode())


if __name__ == "__main__":
    asyncio.run(main())
