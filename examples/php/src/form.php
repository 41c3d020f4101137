<?php
declare(strict_types=1);

// A form that posts back to itself. Input is checked, and every value is
// escaped on output. (A real application also wants a CSRF token.)
$name = '';
$message = '';
$errors = [];
$result = '';

/** Characters in $text; -1 when it is not valid UTF-8 (no mbstring needed). */
function chars(string $text): int
{
    $count = preg_match_all('/./us', $text);
    return $count === false ? -1 : $count;
}

if (($_SERVER['REQUEST_METHOD'] ?? 'GET') === 'POST') {
    $name = trim((string)($_POST['name'] ?? ''));
    $message = trim((string)($_POST['message'] ?? ''));
    if (chars($name) < 1 || chars($name) > 80) {
        $errors[] = 'A name of 1 to 80 characters is needed.';
    }
    if (chars($message) < 1 || chars($message) > 1000) {
        $errors[] = 'A message of 1 to 1000 characters is needed.';
    }
    if ($errors) {
        http_response_code(422);
    } else {
        $result = '<p class="thanks">Thank you, <strong>' . h($name) . '</strong>. You wrote:</p>'
            . '<blockquote>' . nl2br(h($message)) . '</blockquote>';
    }
}

$list = '';
foreach ($errors as $error) {
    $list .= '<li>' . h($error) . '</li>';
}

page('Guest book form', ($list ? '<ul class="errors">' . $list . '</ul>' : '') . $result . '
<form method="post" action="' . url('/form') . '">
<p><label>Name <input name="name" maxlength="80" value="' . h($name) . '"></label></p>
<p><label>Message <textarea name="message" rows="4" cols="40">' . h($message) . '</textarea></label></p>
<p><button type="submit">Send</button></p>
</form>');
