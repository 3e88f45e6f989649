"""Apply: the I/O that makes desired state real (addresses, announcements, sockets, balancers)."""
