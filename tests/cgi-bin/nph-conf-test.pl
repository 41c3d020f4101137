#!/usr/bin/perl
$| = 1;
print "HTTP/1.0 200 OK\r\n";
print "Content-type: text/plain\r\n";
print "X-Nph-Raw: yes\r\n\r\n";
print "ok\n";
