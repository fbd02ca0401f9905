"""The I/O the three apps share: the HTTP client, console plumbing, private files, rendering a
code to pixels and reading codes back from pixels. Built on the pure core (paycode.shared);
the wallet, the till and the server import it, and it imports none of them."""
