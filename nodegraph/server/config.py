"""What one server is: where it reads and writes, what it lets in, and how it runs graphs."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from ..context import DEVICES, MAX_IMAGE_PIXELS
from ..errors import UsageError

LOCAL_NAMES = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8188
    input_dir: Path = Path("input")  # uploads, and what LoadImage may read
    output_dir: Path = Path("outputs")  # what Save writes
    user_dir: Path = Path("user")  # the editor's settings and saved workflows
    models_dirs: tuple[Path, ...] = ()  # folders of diffusers models and .safetensors checkpoints
    editor: bool = False  # serve ComfyUI's editor at /
    token: str | None = None  # if set, every request needs it (Authorization: Bearer, or ?token=)
    device: str = "auto"
    max_image_pixels: int = MAX_IMAGE_PIXELS  # uploads and LoadImage: larger images are refused unread
    max_upload_bytes: int = 64 << 20
    max_body_bytes: int = 16 << 20  # a graph, a setting, a saved workflow
    max_graph_nodes: int = 1000
    max_queue: int = 256  # runs waiting; more are refused with 429
    max_history: int = 1000  # finished runs remembered; the oldest go first
    allowed_hosts: tuple[str, ...] = ()  # Host names served besides the bound one and localhost
    cache_bytes: int = 2 << 30  # the engine's result cache

    def __post_init__(self):
        if self.device not in DEVICES:
            raise UsageError(f"--device is one of {', '.join(DEVICES)}, got {self.device!r}")
        if not 0 <= self.port <= 65535:
            raise UsageError(f"--port is from 0 to 65535, got {self.port}")
        for name in ("input_dir", "output_dir", "user_dir"):
            object.__setattr__(self, name, Path(getattr(self, name)).expanduser().absolute())
        object.__setattr__(self, "models_dirs", tuple(Path(d).expanduser().absolute() for d in self.models_dirs))
        for folder in self.models_dirs:
            if not folder.is_dir():
                raise UsageError(f"--models-dir {folder}: no such folder")
        if self.token is not None and len(self.token) < 16:
            raise UsageError("--token must be at least 16 characters long; e.g. python -c \"import secrets; "
                             "print(secrets.token_urlsafe())\"")

    @property
    def local_only(self) -> bool:
        """Whether the server listens on the loopback interface only."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    @property
    def temp_dir(self) -> Path:
        return self.user_dir / "temp"

    def folder(self, kind: str) -> Path | None:
        """The folder of /view's and the uploads' `type`: input, output or temp."""
        return {"input": self.input_dir, "output": self.output_dir, "temp": self.temp_dir}.get(kind)
