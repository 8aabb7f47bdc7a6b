KERNELS: dict[str, int]

def available_kernels() -> list[str]: ...

class Chunker:
    min_size: int
    avg_size: int
    max_size: int
    kernel: str
    def __init__(
        self,
        gear: bytes,
        mask_s: int,
        mask_l: int,
        min_size: int,
        avg_size: int,
        max_size: int,
        kernel: str = "scalar",
    ) -> None: ...
    @property
    def position(self) -> int: ...
    def feed(self, data: bytes | bytearray | memoryview) -> list[int]: ...
    def finish(self) -> list[int]: ...

def gear_loop(gear: bytes, data: bytes | bytearray | memoryview, mask: int) -> int: ...
def is_zero(data: bytes | bytearray | memoryview) -> bool: ...
