"""localstripe, run the way this project's tests need it.

localstripe (PyPI) keeps its whole state in /tmp/localstripe.pickle, written
again on every change and read back at start: two instances on one machine
share and clobber one file, and every write costs a dump of everything. This
wrapper gives each instance its own state (in memory, or in `--state FILE`,
saved atomically a moment after a change and when the server stops, and read
back when it starts again), and listens on 127.0.0.1 only.

    python localstripe_server.py --port 8420 [--state FILE]
"""

import argparse
import asyncio
import logging
import os
import pickle
import tempfile

from aiohttp import web
from localstripe import resources, server

SAVE_DELAY_SECONDS = 0.05


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--port', type=int, required=True)
    parser.add_argument('--host', default='127.0.0.1')
    parser.add_argument('--state', help='a file to keep the state in across restarts')
    args = parser.parse_args()

    store = resources.store
    dirty = {'flag': False}

    def save():
        if not args.state or not dirty['flag']:
            return
        dirty['flag'] = False
        folder = os.path.dirname(os.path.abspath(args.state))
        with tempfile.NamedTemporaryFile('wb', dir=folder, delete=False) as f:
            pickle.dump(dict(store), f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(f.name, args.state)

    def mark_dirty(self):
        dirty['flag'] = True

    # localstripe calls dump_to_disk on every change: mark instead, and
    # save from a timer below.
    resources.Store.dump_to_disk = mark_dirty
    resources.Store.try_load_from_disk = lambda self: None
    if args.state and os.path.exists(args.state):
        with open(args.state, 'rb') as f:
            dict.update(store, pickle.load(f))

    async def saver(app):
        async def loop():
            while True:
                await asyncio.sleep(SAVE_DELAY_SECONDS)
                save()
        task = asyncio.create_task(loop())
        yield
        task.cancel()
        save()

    server.app.cleanup_ctx.append(saver)
    logging.basicConfig(level=logging.WARNING)
    web.run_app(server.app, host=args.host, port=args.port, print=None,
                access_log=None)


if __name__ == '__main__':
    main()
