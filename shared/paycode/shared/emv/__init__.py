"""EMV encodings, pure and I/O-free: BER-TLV (`tlv`) and the Consumer-Presented Mode QR (`cpm`).

The asymmetric code version travels inside an EMVCo CPM payload (docs/spec.md §6) so that it rides
in
the container scanners already know; these modules only read and write that container.
"""
