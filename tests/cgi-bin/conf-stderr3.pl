#!/usr/bin/perl
# Closes stdout, then writes to stderr: the response must still end.
$| = 1;
print "Content-type: text/plain\n\n";
print "this is more stdout";
close STDOUT;
print STDERR "conf-stderr3 after stdout closed $ENV{QUERY_STRING}\n";
