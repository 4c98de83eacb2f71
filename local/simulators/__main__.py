"""Run the meeting simulators in the foreground:

    python -m local.simulators --port 8443

and start Chromium with the host rules it prints (plus --ignore-certificate-errors) to open
https://meet.google.com/<code>, https://teams.microsoft.com/l/meetup-join/<id> or
https://zoom.us/j/<id> once the meeting is configured through /_sim/meetings/...
"""
from __future__ import annotations

import argparse

from local.simulators.server import create_server, host_rules


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m local.simulators", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=8443)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args()
    server = create_server(args.port, args.host)
    port = server.server_address[1]
    print(f"Meeting simulators on https://{args.host}:{port} (control API under /_sim/)", flush=True)
    print(f'Chromium: --host-resolver-rules="{host_rules(port)}" --ignore-certificate-errors', flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
