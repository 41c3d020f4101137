#!/usr/bin/perl
# Prints the CGI environment the script received.
print "Content-Type: text/plain\n\n";
for my $k (sort keys %ENV) { print "$k=$ENV{$k}\n"; }
