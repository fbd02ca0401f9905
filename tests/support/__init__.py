"""What the tests share, one module per concern:

    servers     the server fixtures (`server` in this process, `live_server` as a process),
                PostgreSQL databases, commands run as processes or in this process
    shop        the one shop builder: customers with wallets and merchants with tills, as
                library objects or through the console scripts a person types; banks (devices
                and tills written to the database) for tests that make codes themselves;
                many users and merchants at once for the reliability suite
    dashboard   a browser-like client for /dashboard (cookies, CSRF)
    in_process  urllib through an in-process server's app; its configuration changed for a test
    races       two `serve` instances on one PostgreSQL database (tests/reliability/test_races.py)
    protocol    the published test vectors and an in-memory device registry
    orders      a fake orders API for the till's `charge --present`, scripted poll by poll;
                as a script, the till's present window under Xvfb against it
    wallet_server  the real server as the wallet's tests need it: its verdict on a code at
                any time, the requests a wallet sent an in-process server, a reply edited
                on its way back, its wallet clock moved

The servers themselves are started by paycode.server.testing (the benchmarks use it too), and
camera-like frames come from paycode.merchant_pos.synthetic_frames.
"""
