#!/usr/bin/perl
# No header block at all.
print "perl cgi\n";
