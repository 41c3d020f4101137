<?php
declare(strict_types=1);

page('PHP through gunicorn-cgid', '
<p>This small application runs under <code>php-cgi</code>, started by gunicorn-cgid\'s CGI
daemon for each request. Its stylesheet is a static file served by gunicorn-cgid itself.</p>
<ul>
<li><a href="' . url('/form') . '">A form that posts</a></li>
<li><a href="' . url('/server') . '">The CGI variables of this request</a></li>
</ul>');
