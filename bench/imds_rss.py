"""RSS of one IMDS-mode pod (`spotq imds`) after it is ready and has polled a while, on the local environment.

    python -m bench.imds_rss [--seconds 10]

Prints the resident set size (VmRSS) and peak (VmHWM) of the process, and whether botocore was imported.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from testenv import ImdsMock, LocalCluster
from testenv.spotq_imds import SpotqImdsProcess


def _status(pid: int) -> dict[str, str]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return fields


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="how long to let it poll before measuring")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, LocalCluster(verbose=False) as cluster:
        (node,) = cluster.create_spot_nodes(1)
        with ImdsMock(workdir=Path(tmp), imdsv2=True, notice_delay_sec=3600, instance_id=node.instance_id) as mock:
            env = {
                "SPOTQ_KUBE__KUBECONFIG": str(cluster.kubeconfig_path),
                "SPOTQ_IMDS__ENDPOINT": mock.endpoint_url,
                "SPOTQ_IMDS__POLL_INTERVAL_SECONDS": "0.5",
                "NODE_NAME": node.node_name,
                "PYTHONPROFILEIMPORTTIME": "1",  # the import log (stderr → spotq.log) says what was loaded
            }
            with SpotqImdsProcess(env, log_path=Path(tmp) / "spotq.log") as spotq:
                time.sleep(args.seconds)
                assert spotq.process is not None
                status = _status(spotq.process.pid)
            imported = {
                line.rsplit("|", 1)[-1].strip().split(".")[0]
                for line in (Path(tmp) / "spotq.log").read_text(errors="replace").splitlines()
                if line.startswith("import time:")
            }
    sdks = sorted(imported & {"botocore", "aioboto3", "aiobotocore", "boto3"})
    print(f"imds pod: VmRSS {status['VmRSS']}, VmHWM {status['VmHWM']}, AWS SDK modules loaded: {sdks or 'none'}")


if __name__ == "__main__":
    main()
