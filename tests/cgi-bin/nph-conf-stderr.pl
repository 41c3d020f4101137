#!/usr/bin/perl
$| = 1;
print STDERR "nph-conf-stderr says hello $ENV{QUERY_STRING}\n";
print "HTTP/1.0 200 OK\r\nContent-type: text/plain\r\n\r\n";
print "this is nph-stdout";
