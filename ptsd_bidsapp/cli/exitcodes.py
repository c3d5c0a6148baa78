"""Exit codes recommended by the BIDS App execution specification.

0 success, 1 failure, 16 input dataset failed BIDS validation, 17 unknown
analysis level, 18 entity filtering selected no files, and the BSD sysexits
64 USAGE, 65 DATAERR, 66 NOINPUT, 73 CANTCREAT, 74 IOERR.
"""

SUCCESS = 0
FAILURE = 1
INVALID_BIDS = 16
UNKNOWN_LEVEL = 17
NO_MATCH = 18
USAGE = 64
DATAERR = 65
NOINPUT = 66
CANTCREAT = 73
IOERR = 74
