-- The sample school schema the data checks in rules/data_checks.yaml are written against
-- (documented in docs/data-checks.md). Tables carry no foreign keys on purpose: that is how the
-- legacy database was built, and why an orphaned row written by the candidate is only found by a
-- check. Adapt the queries in rules/data_checks.yaml to your own table and column names.

CREATE TABLE students (
    id          bigint PRIMARY KEY,
    name        text NOT NULL
);

CREATE TABLE classes (
    id          bigint PRIMARY KEY,
    name        text NOT NULL
);

CREATE TABLE subjects (
    id          bigint PRIMARY KEY,
    name        text NOT NULL
);

-- A student in a class.
CREATE TABLE enrollments (
    id          bigint PRIMARY KEY,
    student_id  bigint NOT NULL,   -- students.id
    class_id    bigint NOT NULL    -- classes.id
);

-- The final grade of an enrollment in a subject: the weighted sum of its components.
CREATE TABLE grades (
    id            bigint PRIMARY KEY,
    enrollment_id bigint NOT NULL,          -- enrollments.id
    subject_id    bigint NOT NULL,          -- subjects.id
    final_grade   numeric(6, 2) NOT NULL
);

-- One assessed part of a grade (exam, coursework, ...); the weights of a grade sum to 1.
CREATE TABLE grade_components (
    id          bigint PRIMARY KEY,
    grade_id    bigint NOT NULL,            -- grades.id
    score       numeric(6, 2) NOT NULL,
    weight      numeric(5, 4) NOT NULL
);

-- Daily attendance, one row per enrollment and day.
CREATE TABLE attendance (
    id            bigint PRIMARY KEY,
    enrollment_id bigint NOT NULL,          -- enrollments.id
    day           date NOT NULL,
    present       boolean NOT NULL,
    UNIQUE (enrollment_id, day)
);
