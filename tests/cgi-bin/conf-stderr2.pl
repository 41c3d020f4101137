#!/usr/bin/perl
# Closes stderr first, then takes a second before answering.
close STDERR;
sleep 1;
print "Content-type: text/plain\n\n";
print "this is also stdout";
