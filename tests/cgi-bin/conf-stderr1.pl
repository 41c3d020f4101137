#!/usr/bin/perl
# 8 KB on stderr (QUERY_STRING times) before any header: must not deadlock.
my $n = $ENV{QUERY_STRING} || 1;
print STDERR "x" x 8192, "\n" for 1 .. $n;
print "Content-type: text/plain\n\n";
print "this is stdout";
