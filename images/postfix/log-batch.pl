#!/usr/bin/perl
# Copy standard input to standard output in batches: after each write, pause before reading again, so that
# what was logged meanwhile goes out in one write. Docker's log path wakes the shim and dockerd for every
# write a container makes; Postfix writes each log line on its own (~7 per message). Ends, after writing
# everything, when the last writer has closed the pipe.
use strict;
use warnings;

my $pause = ($ENV{MAILSTACK_LOG_BATCH_MS} // 20) / 1000;
fcntl(STDIN, 1031, 1 << 20);    # F_SETPIPE_SZ: room for a burst during the pause (best effort)

while (1) {
    my $read = sysread(STDIN, my $chunk, 1 << 20);
    if (!defined $read) {
        next if $!{EINTR};
        die "log-batch: read: $!\n";
    }
    last if $read == 0;
    my $offset = 0;
    while ($offset < $read) {
        my $written = syswrite(STDOUT, $chunk, $read - $offset, $offset);
        if (!defined $written) {
            next if $!{EINTR};
            die "log-batch: write: $!\n";
        }
        $offset += $written;
    }
    select(undef, undef, undef, $pause);
}
