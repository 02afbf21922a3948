"""The shared plumbing: ids, configuration, RPC, framing, processes, sessions,
serialization and the task stream. Every other layer may import it; it imports
none of them (only ``runtime.exceptions`` and the generated protocol)."""
